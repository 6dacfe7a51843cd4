"""One module per figure (P4 and P7 share `parking`), each with `async def measure(ctx)`.

A figure measures both sides in the run's `bench.common.Context` and returns its `Figure`s;
`bench.run` chooses the figures, runs them in its order and reports them.
"""
