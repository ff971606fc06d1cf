"""Where one training step's GPU time goes: torch.profiler over a few optimizer steps of the train
stage (the harness's model, rows and trainer), CUDA kernels summed by name; with --gaps, also where the
GPU idles between its kernels and what the host was doing then (from the profiler's trace).

    python benchmarks/profile_step.py --shape 1.5b --config workflow --json profile.json [--gaps]
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from pathlib import Path

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import config_spec, harness_trainer, harness_training, qwen_tokenizer  # noqa: E402


GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_WAITS = ("Synchronize", "cudaMemcpy")
STACK_CATEGORIES = ("cpu_op", "user_annotation", "python_function")


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


class HostThread:
    """One host thread's ops (properly nested spans): which run at a given time."""

    def __init__(self, ops: list[dict]):
        self.ops = sorted(ops, key=lambda o: (o["ts"], -o["dur"]))
        self.starts = [o["ts"] for o in self.ops]
        self.parent: list[int] = []
        open_ops: list[int] = []
        for i, o in enumerate(self.ops):
            while open_ops and self._end(open_ops[-1]) < o["ts"] + o["dur"] - 1e-3:
                open_ops.pop()
            self.parent.append(open_ops[-1] if open_ops else -1)
            open_ops.append(i)

    def _end(self, i: int) -> float:
        return self.ops[i]["ts"] + self.ops[i]["dur"]

    def stack(self, ts: float, depth: int) -> str:
        """The innermost `depth` ops running at ts, outermost first."""
        i, names = bisect.bisect_right(self.starts, ts) - 1, []
        while i >= 0 and self._end(i) < ts:
            i = self.parent[i]
        while i >= 0:
            if not self.ops[i]["name"].startswith("ProfilerStep"):
                names.append(self.ops[i]["name"][:70])
            i = self.parent[i]
        return " > ".join(reversed(names[:depth])) or "(no op)"


def idle_gaps(events: list[dict], steps: int, min_us: float = 5.0, depth: int = 3, top: int = 25) -> dict:
    """Where the GPU idles between the first and last GPU work of a trace (torch.profiler's Chrome trace
    events), each gap charged to what the host was doing: blocked in a wait (a synchronize, a copy to
    the host) when the gap began, else late launching the work that ended it."""
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]
    runtime = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")]
    launch_of = {e["args"]["correlation"]: e for e in runtime if "correlation" in e.get("args", {})}
    by_thread: dict = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in STACK_CATEGORIES:
            by_thread.setdefault(e["tid"], []).append(e)
    threads = {tid: HostThread(ops) for tid, ops in by_thread.items()}
    waits = sorted((e for e in runtime if any(w in e["name"] for w in HOST_WAITS) and e["dur"] >= min_us),
                   key=lambda e: e["ts"])
    wait_starts = [w["ts"] for w in waits]
    busy = merged([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    starts = sorted(gpu, key=lambda e: e["ts"])
    sites: dict[str, list[float]] = {}
    total_idle, j = 0.0, 0
    for (_, gap_start), (gap_end, _) in zip(busy, busy[1:]):
        gap = gap_end - gap_start
        total_idle += gap
        if gap < min_us:
            continue
        k = bisect.bisect_right(wait_starts, gap_start) - 1
        wait = waits[k] if k >= 0 and gap_start < waits[k]["ts"] + waits[k]["dur"] else None
        if wait is not None:
            site = f"host wait {wait['name']}: {threads[wait['tid']].stack(wait['ts'], depth)}" \
                if wait["tid"] in threads else f"host wait {wait['name']}"
        else:
            while j < len(starts) and starts[j]["ts"] < gap_end:
                j += 1
            nxt = starts[min(j, len(starts) - 1)]
            launch = launch_of.get(nxt.get("args", {}).get("correlation"))
            site = ("late launch: " + threads[launch["tid"]].stack(launch["ts"], depth)
                    if launch and launch["tid"] in threads else "late launch: (launch not traced)")
        sites.setdefault(site, []).append(gap)
    window = busy[-1][1] - busy[0][0] if busy else 0.0
    rows = sorted(({"site": s, "idle_ms_per_step": sum(g) / 1e3 / steps, "gaps_per_step": len(g) / steps,
                    "largest_gap_ms": max(g) / 1e3} for s, g in sites.items()), key=lambda r: -r["idle_ms_per_step"])
    return {"window_ms_per_step": window / 1e3 / steps, "busy_ms_per_step": sum(b - a for a, b in busy) / 1e3 / steps,
            "idle_ms_per_step": total_idle / 1e3 / steps,
            "idle_under_min_ms_per_step": (total_idle - sum(sum(g) for g in sites.values())) / 1e3 / steps,
            "min_gap_us": min_us, "sites": rows[:top]}


class ProfilerStep(TrainerCallback):
    def __init__(self, profiler):
        self.profiler = profiler

    def on_step_end(self, args, state, control, **kwargs):
        self.profiler.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--config", default="workflow")
    parser.add_argument("--active", type=int, default=3)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--json", required=True)
    parser.add_argument("--gaps", action="store_true", help="charge the GPU's idle gaps to the host's ops")
    args = parser.parse_args()
    spec = config_spec(args.shape, args.config)
    trace = Path(args.json).with_suffix(".trace.json")
    with tempfile.TemporaryDirectory() as tmp, profile(
            activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
            schedule=schedule(wait=2, warmup=1, active=args.active),
            on_trace_ready=(lambda p: p.export_chrome_trace(str(trace))) if args.gaps else None) as profiler:
        _, trainer = harness_trainer(args.shape, spec["sizing"], harness_training(spec), 3 + args.active, Path(tmp),
                                     qwen_tokenizer(), [ProfilerStep(profiler)])
        trainer.train()
    # kernels, not the ops that launch them nor the GPU-side step annotations
    events = [e for e in profiler.key_averages()
              if e.device_type == DeviceType.CUDA and not e.key.startswith("ProfilerStep")]
    total_cuda = sum(e.self_device_time_total for e in events)
    rows = sorted(({"name": e.key, "cuda_ms_per_step": e.self_device_time_total / 1e3 / args.active,
                    "calls_per_step": e.count / args.active, "share": e.self_device_time_total / total_cuda}
                   for e in events if e.self_device_time_total > 0), key=lambda r: -r["cuda_ms_per_step"])
    steps = [e for e in profiler.key_averages() if e.key.startswith("ProfilerStep")]
    record = {"shape": args.shape, "config": args.config, "cuda_ms_per_step": total_cuda / 1e3 / args.active,
              "wall_ms_per_step": (sum(e.cpu_time_total for e in steps) / 1e3 / args.active) if steps else None,
              "kernels": rows[: args.top],
              "ops": profiler.key_averages().table(sort_by="device_time_total", row_limit=args.top)}
    if args.gaps:
        try:
            record["gaps"] = idle_gaps(json.loads(trace.read_text())["traceEvents"], args.active)
        finally:
            trace.unlink(missing_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(f"{args.shape} {args.config}: GPU busy {record['cuda_ms_per_step']:.1f} ms/step, "
          f"wall {record['wall_ms_per_step']} ms/step")
    for r in rows[: args.top]:
        print(f"{r['cuda_ms_per_step']:8.2f} ms {r['share']:6.1%} {r['calls_per_step']:7.0f}x  {r['name'][:110]}")
    print(record["ops"])
    if args.gaps:
        gaps = record["gaps"]
        print(f"GPU idle {gaps['idle_ms_per_step']:.1f} of {gaps['window_ms_per_step']:.1f} ms/step "
              f"({gaps['idle_under_min_ms_per_step']:.1f} in gaps under {gaps['min_gap_us']:.0f} us)")
        for r in gaps["sites"]:
            print(f"{r['idle_ms_per_step']:8.2f} ms {r['gaps_per_step']:7.1f}x (largest {r['largest_gap_ms']:.2f})  {r['site']}")


if __name__ == "__main__":
    main()
