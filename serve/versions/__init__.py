"""Which versions of which models are loaded, kept in step with their base paths.

    disk.py         folder_token: whether a version folder changed (which folders are versions:
                    `models.layout`, `007` is 7, `.staging` ignored)
    unload_rule.py  the availability-preserving unload rule, a pure function
    table.py        VersionTable: version states, refcounted handles for requests, draining
    manager.py      ModelManager: polls the base paths, loads new versions, then unloads old ones
    messages.py     status texts for clients: the model and version, never a path

Reads model base paths (TF Serving's layout, `models.store`); writes nothing.
"""
