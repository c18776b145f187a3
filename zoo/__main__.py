"""``python -m zoo list [--json]`` and ``python -m zoo describe NAME_OR_SPEC_PATH [--input-size N] [--json]``.

Bad input (unknown model, invalid spec, bad flag) prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def _human(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def main(argv=None) -> int:
    parser = _Parser(prog="python -m zoo", description="Model zoo of searched architectures.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_list = sub.add_parser("list", help="list the registered models")
    p_list.add_argument("--json", action="store_true", help="print JSON")
    p_desc = sub.add_parser("describe", help="params, MACs and weights of a model")
    p_desc.add_argument("model", help="zoo name or path of a spec .json")
    p_desc.add_argument("--input-size", type=int, default=None, help="square input size (default: the spec's)")
    p_desc.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    # Imported here so that `--help` and flag errors stay fast.
    import zoo
    from models.spec import SpecError

    try:
        if args.command == "list":
            rows = [zoo.describe(n) for n in zoo.list_models()]
            if args.json:
                print(json.dumps([{k: r[k] for k in ("name", "family", "params", "macs", "input_size",
                                                     "num_classes")} | {"weights": [w["tag"] for w in r["weights"]]}
                                  for r in rows], indent=1))
            else:
                print(f"{'name':26s} {'params':>8s} {'MACs':>9s} {'input':>5s}  weights")
                for r in rows:
                    tags = ",".join(w["tag"] for w in r["weights"]) or "-"
                    print(f"{r['name']:26s} {_human(r['params']):>8s} {_human(r['macs']):>9s} "
                          f"{r['input_size']:>5d}  {tags}")
        else:
            info = zoo.describe(args.model, args.input_size)
            if args.json:
                print(json.dumps(info, indent=1))
            else:
                print(f"{info['name']} ({info['family']}): {info['params']:,} params, {info['macs']:,} MACs at "
                      f"{info['input_size']}×{info['input_size']}, {info['num_classes']} classes, "
                      f"{info['blocks']} blocks")
                for w in info["weights"]:
                    print(f"  weights {w['tag']}: {w['file']} ({w['dataset']}) sha256 {w['sha256'][:16]}…")
    except (zoo.ZooError, SpecError) as e:
        print(f"python -m zoo {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
