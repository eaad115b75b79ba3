"""A nanoGPT-style model of your own, trained for a few steps, with its attention in TensorBoard.

    python examples/custom_model.py runs/custom      # then: tensorboard --logdir runs

Two ways to log: a `Probe` (fixed inputs: attention, metrics, exemplars every N steps), and
metrics over your own batches with `capture.recording` + `metrics.AttentionStats` + `summary.metrics`.
No Hugging Face class and no tokenizer: tb-attention sees the F.scaled_dot_product_attention calls.
"""

import sys

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from tb_attention import Probe, capture, metrics, summary

VOCAB, CONTEXT = 64, 32


class Block(torch.nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # the call tb-attention records
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class TinyGPT(torch.nn.Module):
    def __init__(self, layers=2, dim=32, heads=4):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(VOCAB, dim), torch.nn.Embedding(CONTEXT, dim)
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.head = torch.nn.Linear(dim, VOCAB)

    def forward(self, input_ids):
        x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def batches(steps, batch_size=8, length=16, seed=0):
    """Sequences that count up modulo VOCAB from a random start: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, VOCAB, (batch_size, 1), generator=g)
        yield (start + torch.arange(length)) % VOCAB


def main(logdir, steps=20, every=10):
    torch.manual_seed(0)
    model = TinyGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # Inputs you tokenised yourself: token ids and the strings to show for them.
    ids = [[3, 4, 5, 6, 7, 8, 9], [40, 41, 42, 43, 44]]
    probe = Probe.from_tokens(ids, [[f"<{i}>" for i in seq] for seq in ids], texts=["3 to 9", "40 to 44"])
    writer = SummaryWriter(logdir)
    for step, batch in enumerate(batches(steps + 1)):
        if step % every == 0:
            probe.log(writer, model, step)  # attention, metrics and exemplars of the probe inputs
            # Metrics over this training batch, outside Probe: record one forward, then AttentionStats.
            with torch.no_grad(), capture.recording(model) as recorder:
                model(batch)
            stats = metrics.AttentionStats(num_layers=recorder.num_layers, num_heads=recorder.attentions[0].shape[1])
            stats.update(torch.stack(recorder.attentions, dim=1))  # [batch, layers, heads, N, N]
            summary.metrics(writer, "train_batch", stats.result(), step)
        if step == steps:
            break
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        writer.add_scalar("loss", loss.item(), step)
    writer.close()
    return loss.item()


if __name__ == "__main__":
    print(f"final loss {main(sys.argv[1] if len(sys.argv) > 1 else 'runs/custom'):.3f}")
