"""Extra sinks: one module per sink, each a `Stage` registered with `@register_stage(name)`.

Every module in this folder is imported when a run builds its stages, so a new sink is one file here plus its
registration line; a config turns it on with `sinks: [{name: NAME, params: {...}}]`.
"""
