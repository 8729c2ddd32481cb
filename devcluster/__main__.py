"""``python -m devcluster``: the local cluster's commands and ``demo`` (run from a checkout)."""

from devcluster.cli import cluster
from devcluster.demo import demo

cluster.add_command(demo)

if __name__ == "__main__":
    cluster(prog_name="python -m devcluster")
