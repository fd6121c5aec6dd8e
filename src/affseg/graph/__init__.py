"""Segmentation kernels on affinity graphs, by method family; numpy in, numpy out, no I/O.

- ``core``: machinery every family shares (union-find, binary heap, hash tables, relabelling,
  grid edges, prefetch).
- ``mala``: watershed fragments, region graphs and their mergeable statistics, hierarchical
  agglomeration (MALA / waterz).
- ``signed``: the Mutex Watershed and GASP on signed graphs.
- ``random_walker``: the seeded random walker and its solvers.
- ``malis``: MALIS weights (the loss) and threshold + connected components (its inference).

Layers: ``core`` imports nothing of affseg but ``_checks``/``errors``; the families import
``core`` and, where a method builds on another, the family below (``signed`` uses ``mala``'s
fragments and region graph).
"""
