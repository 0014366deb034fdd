"""Thin click commands, one per DVC stage. The logic lives in :mod:`sftpipe`."""
