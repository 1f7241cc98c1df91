"""Packed datasets: webdataset tar shards with an index (`vitkit data pack`), checked (`verify`), read as a source.

`format` (the index and sample table), `pack` (folder or CIFAR -> shards), `verify` (counts and hashes), `order`
(the (seed, epoch) sample order over shard windows, and why it is ours), `source` (`ShardSource`, `load_shards`).
"""
