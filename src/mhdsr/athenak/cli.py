"""``mhdsr athenak {info,to-npy}``: inspect and convert AthenaK run folders."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("athenak", help="inspect and convert AthenaK .bin output")
    asub = p.add_subparsers(dest="athenak_command", metavar="ACTION", required=True)

    info = asub.add_parser(
        "info", help="describe a run folder (grid, meshblocks, snapshots, deck params)"
    )
    info.add_argument(
        "sim_dir", metavar="SIM_DIR", help="run output folder (holding bin/ or the .bin files)"
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--basename", default=None, help="basename when the folder holds several")
    info.set_defaults(func=_info)

    conv = asub.add_parser(
        "to-npy", help="convert a run to all_fields_NxN.npy (T, N, N, C) float32 + metadata.npz"
    )
    conv.add_argument("--bindir", required=True, help="run folder (or its bin/ folder)")
    conv.add_argument("--outdir", required=True, help="output folder")
    conv.add_argument(
        "--snap-start", type=int, default=None, help="first snapshot number (inclusive)"
    )
    conv.add_argument("--snap-end", type=int, default=None, help="last snapshot number (inclusive)")
    conv.add_argument("--snap-stride", type=int, default=1, help="take every S-th present snapshot")
    conv.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="output N (<= native; integer factors use exact block averaging)",
    )
    conv.add_argument(
        "--fields",
        default=None,
        help="comma-separated channels, e.g. density,By,jz (AthenaK names work too)",
    )
    conv.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/inf values")
    conv.add_argument("--basename", default=None, help="basename when the folder holds several")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.add_argument(
        "--overwrite",
        action="store_true",
        help="replace another run's conversion found in --outdir (refused without it)",
    )
    conv.set_defaults(func=_to_npy)


def _info(args: argparse.Namespace) -> int:
    from mhdsr.athenak.run import AthenaKRun

    info = AthenaKRun(args.sim_dir, basename=args.basename).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    p = info["params"]
    res = "x".join(map(str, info["resolution"]))
    print(f"run          {info['path']}")
    print(
        f"grid         {res}, {info['n_meshblocks']} meshblocks of {'x'.join(map(str, info['meshblock']))}"
    )
    folders = f" ({info['n_ranks']} rank folders)" if info["layout"] != "single" else ""
    print(f"layout       {info['layout']}{folders}, basename {info['basename']}")
    print(f"groups       {', '.join(info['groups'])}")
    print(f"channels     {', '.join(info['channels'])}")
    snaps = info["snapshots"]
    shown = ", ".join(f"{s:05d}" for s in snaps[:8]) + (" ..." if len(snaps) > 8 else "")
    print(f"snapshots    {len(snaps)}: {shown}")
    if snaps:
        print(f"time         {info['time_first']:.6g} .. {info['time_last']:.6g}")
    for idx, why in info["incomplete_snapshots"].items():
        print(f"INCOMPLETE   snapshot {idx}: {why} (left out of the list above)")
    if info["read_check"]:
        print(f"checked      {', '.join(f'{i:05d}' for i in info['read_check'])} read completely")
    for path, why in info["size_mismatch"].items():
        print(f"SIZE         {path}: {why} (truncated or foreign?)")
    keys = ("nu", "eta", "seed", "qshear", "omega0", "beta", "cs")
    print(
        "params       "
        + ", ".join(f"{k}={p[k]} ({info['param_sources'][k]})" for k in keys if k in p)
    )
    return 0


def _to_npy(args: argparse.Namespace) -> int:
    from mhdsr.athenak.convert import to_npy

    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    res = to_npy(
        args.bindir,
        args.outdir,
        snap_start=args.snap_start,
        snap_end=args.snap_end,
        snap_stride=args.snap_stride,
        resolution=args.resolution,
        fields=fields,
        allow_nonfinite=args.allow_nonfinite,
        progress=not args.no_progress,
        basename=args.basename,
        overwrite=args.overwrite,
    )
    shape = "x".join(map(str, res["shape"]))
    note = "" if res["resample"] == "none" else f" (resampled: {res['resample']})"
    print(f"wrote {res['data']} ({shape} float32, T,N,N,C){note}")
    print(f"wrote {res['metadata']}")
    for p in res["removed_stale"]:
        print(f"removed {p} (an earlier conversion that metadata.npz no longer describes)")
    return 0
