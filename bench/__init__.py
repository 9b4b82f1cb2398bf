"""Benchmarks of mountfs side by side with the raw SDK (boto3) and peer mounts (rclone, s3fs).

Not tests: `python -m bench` starts its own SeaweedFS, fills a bucket and prints figures; see
bench/RESULTS.md for the last full run.
"""
