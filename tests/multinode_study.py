"""Runs a tiny study on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster), joined by address.

Usage: python multinode_study.py CONFIG_JSON   (prints the study directory on its last line)
"""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster


def main() -> None:
    from study.config import parse_config
    from study.runner import run_study

    doc = json.loads(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)  # a second node: trials must spread over both to run two at a time
    cluster.wait_for_nodes()
    try:
        run = run_study(parse_config({**doc, "ray": {"address": cluster.address}}), progress=False)
    finally:
        ray.shutdown()  # the driver leaves before the nodes go
        cluster.shutdown()
    print(run.study_dir)


if __name__ == "__main__":
    main()
