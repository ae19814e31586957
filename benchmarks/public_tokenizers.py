"""Public tokenizers at release size (random weights): parameters, load time, CPU cost.

For each public name this builds the release configuration with random weights, writes them
in the released file format (the container and names of the real file), then times

    load s      `tokbench.load(name, weights=FILE)`: read the file, build, convert, load
    encode s    per 256x256 image (batch 2, best of 2 after a warm-up): wall-clock and process CPU seconds
    decode s    the same for decoding

and prints a Markdown table. Usage: python benchmarks/public_tokenizers.py [--names a,b] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

import tokbench
from tokbench import registry
from tokbench.tokenizers.public import llamagen, taming, titok, var
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap

NAMES = ["llamagen-vq16", "llamagen-vq8", "var-vqvae", "taming-vqgan-f16-16384", "taming-vqgan-f16-1024",
         "sd-vae-kl-f8", "mar-kl16", "titok-s128", "titok-b64", "titok-l32"]


def write_release(name: str, model, folder: Path) -> Path:
    """Write ``model``'s weights as the public release of ``name`` is laid out; return the weights path."""
    cfg, state = model.config, model.state_dict()
    if name.startswith("llamagen"):
        sd = llamagen.keymap_for(cfg).to_upstream(state) | {"quantize.codebook_used": torch.zeros(65536)}
        path = folder / ("vq_ds16_c2i.pt" if name.endswith("16") else "vq_ds8_c2i.pt")
        torch.save({"model": sd}, path)
    elif name == "var-vqvae":
        sd = var.keymap_for(cfg).to_upstream(state)
        sd["quantize.ema_vocab_hit_SV"] = torch.zeros(len(cfg["scales"]), cfg["codebook_size"])
        path = folder / "vae_ch160v4096z32.pth"
        torch.save(sd, path)
    elif name.startswith("taming"):
        (folder / "ckpts").mkdir()
        (folder / "configs").mkdir()
        path = folder / "ckpts" / "last.ckpt"
        torch.save({"state_dict": taming.keymap_for(cfg).to_upstream(state), "global_step": 0}, path)
        ddconfig = dict(double_z=False, z_channels=cfg["z_channels"], resolution=256, in_channels=3, out_ch=3,
                        ch=cfg["ch"], ch_mult=cfg["ch_mult"], num_res_blocks=cfg["num_res_blocks"],
                        attn_resolutions=[256 // 2 ** lvl for lvl in cfg["attn_levels"]], dropout=0.0)
        (folder / "configs" / "model.yaml").write_text(yaml.safe_dump({"model": {"params": dict(
            embed_dim=cfg["code_dim"], n_embed=cfg["codebook_size"], ddconfig=ddconfig)}}))
    elif name.startswith(("sd-vae", "mar")):
        km = autoencoder_keymap("ldm", cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"],
                                attn_levels=cfg["enc_attn_levels"], dec_attn_levels=cfg["dec_attn_levels"] or ())
        path = folder / ("kl16.ckpt" if name == "mar-kl16" else "vae-ft-mse-840000-ema-pruned.ckpt")
        torch.save({("model" if name == "mar-kl16" else "state_dict"): km.to_upstream(state)}, path)
    else:
        size = {v[0]: k for k, v in titok.VIT_SIZES.items()}[cfg["width"]]
        vq = dict(codebook_size=cfg["codebook_size"], token_size=cfg["code_dim"], use_l2_norm=True,
                  vit_enc_model_size=size, vit_dec_model_size=size, vit_enc_patch_size=cfg["patch_size"],
                  vit_dec_patch_size=cfg["patch_size"], num_latent_tokens=cfg["num_tokens"], finetune_decoder=True)
        (folder / "config.json").write_text(json.dumps({"model": {"vq_model": vq},
                                                        "dataset": {"preprocessing": {"crop_size": 256}}}))
        save_file({k: v.contiguous() for k, v in titok.keymap_for(model).to_upstream(state).items()},
                  folder / "model.safetensors")
        path = folder
    return path


def timed(fn, repeats: int = 2) -> tuple[float, float]:
    """Best (wall, process-CPU) seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def measure(name: str, batch: int) -> dict:
    torch.manual_seed(0)
    model = registry.create(name).eval()
    params = model.num_parameters()
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_release(name, model, Path(tmp))
        del model
        t0 = time.perf_counter()
        model = tokbench.load(name, weights=str(weights))
        load_s = time.perf_counter() - t0
    x = torch.rand(batch, 3, 256, 256)
    tokens = model.encode(x)
    enc_wall, enc_cpu = timed(lambda: model.encode(x))
    dec_wall, dec_cpu = timed(lambda: model.decode(tokens))
    layout = model.layout_for(256, 256)
    return dict(name=name, family=model.family, params=params, tokens=layout.describe(), load_s=load_s,
                enc_wall=enc_wall / batch, enc_cpu=enc_cpu / batch, dec_wall=dec_wall / batch, dec_cpu=dec_cpu / batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default=",".join(NAMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch}\n")
    print("| name | family | parameters | tokens at 256 px | load s | encode s/img (CPU s) | decode s/img (CPU s) |")
    print("|---|---|---:|---|---:|---:|---:|")
    for name in args.names.split(","):
        r = measure(name, args.batch)
        print(f"| `{r['name']}` | {r['family']} | {r['params'] / 1e6:.1f}M | {r['tokens']} | {r['load_s']:.2f} | "
              f"{r['enc_wall']:.2f} ({r['enc_cpu']:.2f}) | {r['dec_wall']:.2f} ({r['dec_cpu']:.2f}) |", flush=True)


if __name__ == "__main__":
    main()
