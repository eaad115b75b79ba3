"""Object-storage benchmark: bytes uploaded ÷ bytes finally stored, a probe-and-monitor loop flushed every step.

    python bench/bench_object_store.py [--steps 100] [--schemes s3 gs]

Local S3 (moto's server) and GCS (fake-gcs-server) servers behind a proxy that counts every byte the
writing process sends (request lines, headers and bodies: listings too). Per scheme, two writers
of the same loop — a small GPT-2 (4 layers x 4 heads) trained on one batch, `AttentionMonitor` every
step, a `Probe` of 8 sentences every step, the loss as a scalar, `flush()` every step:
  - "TensorBoard's file layer": TensorBoard's own EventFileWriter on the URL, as every writer was
    before (and as a plain SummaryWriter still is until tb-attention first writes to it);
  - "tb-attention": `tb_attention.Writer` (write-once parts, storage/event_parts.py).
Then every object is downloaded and its records counted: records written vs. records kept.
Goal: sent / stored <= 1.2 with every record kept.
"""

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402
from tensorboard.plugins.scalar import summary_v2 as scalar_summary  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402

import tb_attention  # noqa: E402
from tb_attention.convert import assets  # noqa: E402
from tb_attention.storage import summary  # noqa: E402
from tests.support import object_store  # noqa: E402
from tests.support.models import tiny_gpt2, train_step  # noqa: E402

SENTENCES = [
    "The cat sat on the mat.", "Florence is a city in central Italy.", "She gave her brother a book about Rome.",
    "Rivers flow from the mountains to the sea.", "The old man, who lived alone, wrote letters every day.",
    "Birds sing.", "The committee approved the new budget on Tuesday.", "After the war, production began in Georgia.",
]
GOAL = 1.2


class TensorBoardFileLayer:
    """TensorBoard's own EventFileWriter on the logdir, with the add_summary our writing functions call."""

    def __init__(self, logdir):
        self._events = EventFileWriter(logdir, 10, 120)

    def add_summary(self, summary_pb, global_step=None, walltime=None):
        self._events.add_event(event_pb2.Event(summary=summary_pb, step=int(global_step or 0),
                                               wall_time=time.time() if walltime is None else walltime))

    def add_scalar(self, tag, value, step):
        self.add_summary(scalar_summary.scalar_pb(tag, float(value)), step)

    def flush(self):
        self._events.flush()

    def close(self):
        self._events.close()


def training_loop(writer, steps):
    torch.manual_seed(0)
    tokenizer = assets.gpt2_tokenizer()
    model = tiny_gpt2(layers=4, heads=4, embed=64, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = tb_attention.Probe(tokenizer, SENTENCES, syntax=False)
    monitor = tb_attention.AttentionMonitor(model, every_n_steps=1)
    batch = torch.tensor([tokenizer("Rivers flow from the mountains to the sea and back again.")["input_ids"]] * 4)
    for step in range(steps):
        model.train()
        writer.add_scalar("loss", train_step(model, optimizer, batch), step)
        monitor.log(writer, step)
        probe.log(writer, model, step)
        writer.flush()
    writer.close()


def records_kept(store, bucket, prefix):
    """(summary records, steps of the probe's attention) in the stored event files."""
    with tempfile.TemporaryDirectory() as folder:
        store.download(bucket, prefix, folder)
        records, steps = 0, set()
        for path in sorted(pathlib.Path(folder).rglob("*tfevents*")):
            for event in EventFileLoader(str(path)).Load():
                records += len(event.summary.value)
                steps |= {event.step for v in event.summary.value if v.tag == "probe"}
    return records, len(steps)


def measure(store, kind, steps):
    bucket = store.new_bucket()
    url = f"{store.scheme}://{bucket}/runs/{kind}"
    before, start = store.sent(), time.perf_counter()
    writer = TensorBoardFileLayer(url) if kind == "tensorboard" else summary.Writer(url)
    training_loop(writer, steps)
    seconds = time.perf_counter() - start
    sent = store.sent() - before
    objects = store.objects(bucket, f"runs/{kind}/")
    stored = sum(objects.values())
    records, probe_steps = records_kept(store, bucket, f"runs/{kind}/")
    return {"sent": sent, "stored": stored, "objects": len(objects), "records": records, "probe_steps": probe_steps,
            "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--schemes", nargs="+", default=["s3", "gs"], choices=["s3", "gs"])
    args = parser.parse_args()
    rows = []
    for scheme in args.schemes:
        with object_store.running(scheme) as store:
            for kind in ("tensorboard", "tb-attention"):
                r = measure(store, kind, args.steps)
                rows.append((scheme, kind, r))
                print(f"{scheme} {kind}: {r}", file=sys.stderr, flush=True)
    expected = max(r["records"] for _, _, r in rows)
    print(f"\n{args.steps} steps, flushed every step (every record: {expected} summary values, "
          f"{args.steps} probe steps)\n")
    print("| store | writer | sent | stored | sent ÷ stored | objects | records kept | probe steps kept | write time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scheme, kind, r in rows:
        ratio = r["sent"] / max(r["stored"], 1)
        name = "TensorBoard's file layer" if kind == "tensorboard" else "tb-attention (write-once parts)"
        print(f"| {scheme}:// | {name} | {r['sent'] / 1e6:.2f} MB | {r['stored'] / 1e6:.2f} MB | {ratio:.2f}x | "
              f"{r['objects']} | {r['records']} of {expected} | {r['probe_steps']} of {args.steps} | {r['seconds']:.0f} s |")
    ours = [r for _, kind, r in rows if kind == "tb-attention"]
    ok = all(r["sent"] / r["stored"] <= GOAL and r["records"] == expected for r in ours)
    print(f"\ngoal (tb-attention: sent ÷ stored <= {GOAL}, every record kept): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
