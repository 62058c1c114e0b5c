"""The Tollway worker process: runs execution workflows and their activities."""
