"""Training with Hugging Face `accelerate`, a Probe logged through accelerate's TensorBoard tracker.

    accelerate launch examples/accelerate_train.py runs/accelerate   # or plain python, on CPU

The probe goes through the tracker's own SummaryWriter, so loss and attention share one event file;
only the main process writes, on the unwrapped model (DistributedDataParallel's forward would wait
for the other ranks).
"""

import pathlib
import sys

import torch
import torch.nn.functional as F
from accelerate import Accelerator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from custom_model import VOCAB, TinyGPT, batches  # noqa: E402

from tb_attention import Probe  # noqa: E402


def main(logdir, steps=20, every=10, cpu=True):
    accelerator = Accelerator(cpu=cpu, log_with="tensorboard", project_dir=logdir)
    accelerator.init_trackers("run")
    torch.manual_seed(0)
    model = TinyGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    probe = Probe.from_tokens([[3, 4, 5, 6, 7]], [["3", "4", "5", "6", "7"]])
    writer = accelerator.get_tracker("tensorboard", unwrap=True)  # a torch SummaryWriter
    for step, batch in enumerate(batches(steps + 1)):
        if step % every == 0 and accelerator.is_main_process:
            probe.log(writer, accelerator.unwrap_model(model), step)
        if step == steps:
            break
        batch = batch.to(accelerator.device)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": loss.item()}, step=step)
    accelerator.end_training()
    return loss.item()


if __name__ == "__main__":
    print(f"final loss {main(sys.argv[1] if len(sys.argv) > 1 else 'runs/accelerate'):.3f}")
