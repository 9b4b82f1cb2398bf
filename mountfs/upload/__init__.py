"""Writes: staged files on the cache disk, uploaded as one PUT or a multipart upload, journalled
in LMDB so that a crash loses nothing (journal, staging, uploader, recovery)."""
