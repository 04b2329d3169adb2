"""Analysis of results: the cells of a results table (:mod:`.cells`), Pareto fronts
(:mod:`.pareto`), the best variant within an accuracy bound (:mod:`.select`, ``harness select``)
and a run history (:mod:`.history`, ``harness history``). Importing this package imports none of
them."""
