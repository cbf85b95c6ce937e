"""The runner daemon (``daemon.py``) and what runs in each task's subprocess (``child.py``)."""
