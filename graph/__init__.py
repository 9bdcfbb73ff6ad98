"""The Neo4j side of the engine: a heterogeneous graph of customers, accounts, merchants, devices,
IPs and transactions, kept in step with the bank's change stream.

One idea per module, read in this order:

- ``model.py``   the graph schema as data (labels, keys, relationship types, which row owns what);
- ``cypher.py``  a pure planner: a batch of domain events -> a few parameterised, version-guarded
                 UNWIND statements (and the schema's constraints/indexes);
- ``writer.py``  ``GraphWriter``: an async, bounded, batching, retrying writer off the scoring path;
- ``metrics.py`` its Prometheus metrics;
- ``export.py``  a point-in-time export of the graph for training;
- ``synthetic.py`` well-formed synthetic events for the graph's tests and benchmark.
"""
