r"""Parallelism across devices: simulated in one process, and on a real process group (``torch.distributed``).

* :mod:`~minilib.parallel.simulated` -- :func:`ring_attention`, every worker's share computed in one
  process (chapter 03);
* :mod:`~minilib.parallel.launch` -- :func:`launch` starts ``W`` processes joined in a gloo group on this
  machine and returns what each returned;
* :mod:`~minilib.parallel.ring` -- ring attention across those processes, with the contiguous and
  zig-zag layouts (:func:`sequence_positions`, :func:`shard`, :func:`unshard`);
* :mod:`~minilib.parallel.lasp` -- LASP-2 sequence-parallel linear attention;
* :mod:`~minilib.parallel.comm` -- :class:`RankLog`, each rank's timeline and bytes moved.

Every public name is importable from here.
"""
from __future__ import annotations

from minilib.parallel.comm import RankLog
from minilib.parallel.lasp import lasp2_distributed
from minilib.parallel.launch import WorkerError, free_port, launch
from minilib.parallel.ring import LAYOUTS, ring_attention_distributed, sequence_positions, shard, unshard
from minilib.parallel.simulated import ring_attention

__all__ = ["ring_attention", "launch", "free_port", "WorkerError", "RankLog", "LAYOUTS", "sequence_positions",
           "shard", "unshard", "ring_attention_distributed", "lasp2_distributed"]
