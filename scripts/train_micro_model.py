"""Train the micro Make-Your-Video model (docs/micro_model.md) and export it as a checkpoint.

    python scripts/train_micro_model.py --state ~/.cache/myv-micro/state.pt \
        --out tests/fixtures/myv_micro.safetensors [--steps 12000] [--minutes 120]

Runs in ComfyUI's Python (COMFYUI_PATH or --comfyui), on the CPU, 2 threads. Resumable: with an
existing --state it continues from there (same --seed and --steps), drawing the batches an
uninterrupted run would; --minutes stops it early with the state saved, and a later call goes on.
The export holds the EMA weights in the official key layout plus the official noise schedule, and
loads with MYV Checkpoint Loader. CI never trains.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "scripts")]
from micro_model import network  # noqa: E402
from micro_model.training import Trainer  # noqa: E402
from unet_step import find_comfyui, load_comfyui  # noqa: E402


def official_schedule(steps=1000, start=0.00085, end=0.012):
    """The release's `betas` / `alphas_cumprod` (LVDM's "linear": linear in sqrt(beta))."""
    betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
    return {"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float()}


def export(trainer, path):
    from safetensors.torch import save_file

    sd = {k: v.half().contiguous() for k, v in trainer.ema_state_dict().items()}
    sd.update(official_schedule())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"trained_steps": str(trainer.step), "seed": str(trainer.seed)})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", help="ComfyUI folder (default: COMFYUI_PATH)")
    parser.add_argument("--state", type=Path, required=True, help="training state file (resumed if it exists)")
    parser.add_argument("--out", type=Path, required=True, help="the exported checkpoint (.safetensors)")
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=250)
    args = parser.parse_args()

    torch.set_num_threads(2)
    pack = load_comfyui(find_comfyui(args.comfyui), "cpu", pytorch_attention=True)
    depth_to_latent = importlib.import_module(pack.__name__ + ".myv_core.depth").depth_to_latent

    torch.manual_seed(args.seed)
    net = network.MicroUNet(pack, network.initial_weights(args.seed))
    trainer = Trainer(net, args.seed, args.steps, depth_to_latent)
    if args.state.exists():
        trainer.load(torch.load(args.state, weights_only=True))
        print(f"resumed at step {trainer.step} of {args.steps}", flush=True)
    print(f"{sum(p.numel() for p in trainer.params)} parameters", flush=True)
    deadline = None if args.minutes is None else time.monotonic() + 60 * args.minutes

    def save():
        args.state.parent.mkdir(parents=True, exist_ok=True)
        torch.save(trainer.state(), str(args.state) + ".tmp")
        Path(str(args.state) + ".tmp").replace(args.state)

    while trainer.step < args.steps and (deadline is None or time.monotonic() < deadline):
        trainer.train_step()
        if trainer.step % 50 == 0:
            recent = trainer.log[-50:]
            print(f"step {trainer.step}: loss {sum(r[1] for r in recent) / 50:.4f} "
                  f"eps mse {sum(r[2] for r in recent) / 50:.4f} "
                  f"{sum(r[3] for r in recent) / 50:.3f} s/step", flush=True)
        if trainer.step % args.save_every == 0:
            save()
    save()
    export(trainer, args.out)
    print(f"step {trainer.step}: wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
