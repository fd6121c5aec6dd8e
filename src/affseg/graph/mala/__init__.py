"""MALA: watershed fragments, region graphs with mergeable statistics, hierarchical agglomeration."""
