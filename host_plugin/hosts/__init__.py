"""Host adapters. base.py holds the Host interface and the JobRunner; resolve/, nuke/ and blender/ (later)
are the only modules that import a host's API."""

from host_plugin.hosts.base import CANCELLED, DONE, ERROR, PROGRESS, Host, JobContext, JobEvent, JobRunner

__all__ = ["CANCELLED", "DONE", "ERROR", "PROGRESS", "Host", "JobContext", "JobEvent", "JobRunner"]
