"""The fused mode's offline pass: a join rewrites the past of a young joined track, and nothing else.

Online, when the fusion joins two tracks (a young duplicate merged into the older track of the same person, a lost
person found again as a new track, a track dragged off its person handing over), the joined identity maps to the
older one from then on, but the boxes it already sent out keep the joined one. Offline (recorded files, a completed
run), those earlier boxes take the older identity too, when the joined track had lived at most `rewrite_s` seconds:
a young track is a fragment of the person it joins; a long-lived track that is joined late may have been someone
else for most of its life (rewriting all of it loses on those: see docs/fusion.md). A camera segment is rewritten
only where none of its steps with the camera's own box overlaps such a step of a segment of the same camera that
already shows the older identity, so no identity is on two of a view's own boxes in one frame (a predicted box that
repeats an identity is left out when the MOT files are written). No parameter beyond `rewrite_s`, and no evidence
beyond the online joins.

    joins = assoc.joins                            # {joined global id: Join(into, t, age_s)}
    moved = rewritten_ids(joins, rewrite_s=2.0)   # {joined global id: identity its past carries offline}
    offline = offline_ids(online, moved, runs)    # {(camera, segment): id}; runs: steps with the view's own box
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Join:
    """One online join: the joined identity continues as `into` from time `t` (s); `age_s`: how long the joined
    track had lived by then (s)."""

    into: int
    t: float
    age_s: float


def rewritten_ids(joins: dict[int, Join], rewrite_s: float | None) -> dict[int, int]:
    """Each joined identity whose track was at most rewrite_s old when joined -> the identity its earlier boxes carry
    offline, following the chain of joins as long as each joined track was that young (None: no rewrites)."""
    if rewrite_s is None:
        return {}
    out = {}
    for gid in joins:
        to, hops = gid, 0
        while to in joins and joins[to].age_s <= rewrite_s + 1e-9 and hops <= len(joins):
            to, hops = joins[to].into, hops + 1
        if to != gid:
            out[gid] = to
    return out


def _overlap(a: list[list[int]], b: list[list[int]]) -> bool:
    """Do two sorted lists of inclusive step runs [first, last] share a step?"""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def offline_ids(online: dict[tuple[str, Hashable], int], moved: dict[int, int],
                runs: dict[tuple[str, Hashable], list[list[int]]]) -> dict[tuple[str, Hashable], int]:
    """The offline identity of each (camera, segment): its online identity moved by `moved`, unless a segment of the
    same camera that shows the new identity (online, or moved before it) was shown at one of its steps (runs: sorted
    inclusive step runs per segment; a segment without runs never clashes)."""
    final = dict(online)
    showing: dict[tuple[str, int], list] = {}  # (camera, identity) -> its segments
    for key, gid in online.items():
        showing.setdefault((key[0], gid), []).append(key)
    for key in sorted((k for k, g in online.items() if g in moved), key=lambda k: (runs.get(k) or [[0]])[0][0]):
        new = moved[online[key]]
        mine = runs.get(key, [])
        if any(_overlap(mine, runs.get(other, [])) for other in showing.get((key[0], new), ())):
            continue  # this camera showed both at one moment: two people, or two boxes of one; keep the online id
        final[key] = new
        showing.setdefault((key[0], new), []).append(key)
    return final


GAP_STEPS = 2  # a segment missing from at most this many steps in a row still counts as shown through them


def add_step(runs: list[list[int]], step: int) -> None:
    """Record that a segment was shown at step (steps come in order): extend the last run (across a gap of at most
    GAP_STEPS, a missed detection or two: fewer runs to keep, and the clash test errs towards the online id) or start
    one."""
    if runs and runs[-1][1] >= step - 1 - GAP_STEPS:
        runs[-1][1] = max(runs[-1][1], step)
    else:
        runs.append([step, step])


__all__ = ["Join", "add_step", "offline_ids", "rewritten_ids"]
