"""`python -m saecore agreement A B --acts DIR` and `python -m saecore encoder A B`: do matched features agree
beyond their decoder directions (activations on held-out tokens; encoder directions)?"""

from __future__ import annotations

import argparse
import json
import math


def _num(x: float, digits: int = 4) -> str:
    """A number for the table; NaN as 'n/a'."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _print_agreement(result) -> None:
    from saecore.text import plural

    s = result.summary()
    print(f"Activation agreement {result.run_a} ↔ {result.run_b} over {plural(s['n_tokens'], 'token')} "
          f"(rows {result.start:,}–{result.stop:,} of {result.info.get('store')})")
    print(f"  matched pairs       {s['n_pairs']:,}  (decoder PW-MCC {_num(s['decoder_mcc'])})")
    print(f"  mean Pearson        {_num(s['pearson_mean'])}  (median {_num(s['pearson_median'])}, "
          f"{s['pearson_undefined']:,} undefined)")
    print(f"  mean Jaccard        {_num(s['jaccard_mean'])}  (median {_num(s['jaccard_median'])}, "
          f"{s['jaccard_undefined']:,} undefined)")
    print(f"  decoder cosine vs Pearson across pairs: r = {_num(s['decoder_vs_pearson'], 3)}")


def _emit(result, args, show) -> int:
    """Write the per-pair CSV when asked, then print JSON or the readable summary."""
    if args.out:
        result.frame().to_csv(args.out, index=False)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        show(result)
        if args.out:
            print(f"pairs written to {args.out}")
    return 0


def cmd_agreement(args) -> int:
    from saecore.agreement import activation_agreement
    from saecore.cli import _tqdm_progress

    result = activation_agreement(args.run_a, args.run_b, args.acts, start=args.start, stop=args.stop,
                                  batch_size=args.batch_size, device=args.device,
                                  sign="abs" if args.abs else "signed",
                                  progress=None if args.json else _tqdm_progress("agreement"))
    return _emit(result, args, _print_agreement)


def _print_encoder(result) -> None:
    t = result.threshold
    print(f"Encoder vs decoder matching {result.run_a} ↔ {result.run_b} ({result.sign} cosine)")
    print(f"  decoder PW-MCC             {_num(result.decoder_pw_mcc)}")
    print(f"  encoder PW-MCC             {_num(result.encoder_pw_mcc)}")
    print(f"  shared (decoder > {t:g})     {_num(result.shared_decoder, 3)}")
    print(f"  shared (encoder > {t:g})     {_num(result.shared_encoder, 3)}")
    print(f"  shared in both (> {t:g})     {_num(result.shared_both, 3)}")
    print(f"  same partner both ways     {_num(result.same_partner, 3)}")


def cmd_encoder(args) -> int:
    from saecore.agreement import compare_encoders

    result = compare_encoders(args.run_a, args.run_b, threshold=args.threshold,
                              sign="abs" if args.abs else "signed", device=args.device)
    return _emit(result, args, _print_encoder)


def _pair_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text)
    p.add_argument("run_a", metavar="A")
    p.add_argument("run_b", metavar="B")
    return p


def _common(p: argparse.ArgumentParser, func, out_help: str) -> None:
    """The options both commands share: device, sign, CSV and JSON output."""
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--abs", action="store_true", help="match on |cosine| instead of the signed cosine")
    p.add_argument("--out", default=None, metavar="CSV", help=out_help)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=func)


def register(subparsers) -> None:
    p = _pair_parser(subparsers, "agreement",
                     "Pearson and Jaccard of matched features' activations on stored held-out tokens")
    p.add_argument("--acts", required=True, metavar="DIR", help="folder of stored activations (saecore.activations)")
    p.add_argument("--start", type=int, default=0, help="first stored row to use (default 0)")
    p.add_argument("--stop", type=int, default=None, help="row to stop before (default: all)")
    p.add_argument("--batch-size", type=int, default=2048, help="tokens encoded at once (bounds memory)")
    _common(p, cmd_agreement, "write one row per matched pair to this file")

    p = _pair_parser(subparsers, "encoder", "encoder vs decoder matching of two runs and the shared-in-both fraction")
    p.add_argument("--threshold", type=float, default=0.7, help="cosine above which a partner is shared")
    _common(p, cmd_encoder, "write one row per feature of A to this file")
