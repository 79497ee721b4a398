"""Name the node(s) that make an all-reduce across Slurm nodes fail or crawl, by testing pairs.

`hpcgpu doctor --slurm --nodes N` (N >= 3) runs the all-reduce across all N nodes and then across
pairs of them: first disjoint pairs (node 0 with 1, 2 with 3, ...; an odd last node with node 0), so
every node is in one pair. A pair fails, or is slow when its bus bandwidth is below SLOW_FRACTION of
the best pair's. Every node of a bad pair is then paired with a node of a good pair: if that pair is
bad too, the node is named. With no good pair to compare against, no single node is to blame (the
whole network is slow, or the test cannot run), and the result says so. N/2 + (nodes in bad pairs)
runs in all. `locate` is pure: it is given the function that measures a pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

#: a pair slower than this fraction of the best pair's bus bandwidth is "far below the others"
SLOW_FRACTION = 0.5


@dataclass
class Located:
    """What the pair tests found: the nodes named, every pair measured (GB/s, None: failed), why."""

    bad: list[str]
    pairs: list[tuple[str, str, Optional[float]]] = field(default_factory=list)
    reason: str = ""


def first_pairs(nodes: Sequence[str]) -> list[tuple[str, str]]:
    """Disjoint pairs covering every node once (an odd last node goes with the first node)."""
    pairs = [(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
    if len(nodes) % 2:
        pairs.append((nodes[-1], nodes[0]))
    return pairs


def bad_pair(busbw: Optional[float], best: float) -> bool:
    return busbw is None or busbw < SLOW_FRACTION * best


def locate(nodes: Sequence[str], measure: Callable[[str, str], Optional[float]]) -> Located:
    """Test pairs of nodes (measure(a, b): bus bandwidth in GB/s, None when the all-reduce failed)."""
    if len(nodes) < 3:
        return Located([], [], "a pair alone cannot tell which of its two nodes is at fault: test 3 or more")
    seen: list[tuple[str, str, Optional[float]]] = []
    for a, b in first_pairs(nodes):
        seen.append((a, b, measure(a, b)))
    best = max((bw for _, _, bw in seen if bw is not None), default=0.0)
    good = [p for p in seen if not bad_pair(p[2], best)]
    suspects = sorted({n for a, b, bw in seen if bad_pair(bw, best) for n in (a, b)}, key=list(nodes).index)
    if not suspects:
        return Located([], seen, f"every pair reached at least {SLOW_FRACTION:.0%} of the best pair's bandwidth")
    if not good:
        return Located([], seen, "every pair failed or was slow: the fault is not one node (the network, the "
                                 "partition, or the test itself)")
    reference = [n for a, b, _ in good for n in (a, b)]
    bad = []
    for node in suspects:
        partner = next(r for r in reference if r != node)
        bw = measure(node, partner)
        seen.append((node, partner, bw))
        if bad_pair(bw, best):
            bad.append(node)
    why = (f"slow or failing with nodes that are fine with others (below {SLOW_FRACTION:.0%} of the best "
           f"pair's {best:.2f} GB/s, or no result)" if bad else
           "the bad pairs were fine when re-paired: an intermittent fault, or one between those two nodes only")
    return Located(bad, seen, why)
