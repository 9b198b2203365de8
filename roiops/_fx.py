"""torch.fx symbolic tracing: each public function of roiops is one node of an FX graph.

``torch.fx.symbolic_trace`` runs a module's Python code on ``Proxy`` objects, which
roiops' argument checks and fused op calls cannot take. So each public function, and
the functional core of each pooler, first looks for a Proxy among its arguments and, if
there is one, records itself as a single ``call_function`` node instead of running; the
graph calls the function with real tensors later. torchvision gets the same leaves from
``torch.fx.wrap``, which replaces the name only in the globals of the module that
defines it, and only while tracing: a model that imported the function under another
name (``from roiops import roi_align``, ``roiops.roi_align``) would still be traced
into it. Checking the arguments works whatever the name the caller used.

Each of them starts with the same preamble (TorchScript, which never sees a Proxy, skips
it as a constant branch)::

    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(fn, (arg, ...))
        if node is not None:
            return node
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.fx


def find_proxy(*args: Any) -> torch.fx.Proxy | None:
    """The first FX Proxy among ``args``, looking into lists, tuples and dict values
    (a traced model passes e.g. a dict of Proxies as features), or None."""
    for a in args:
        if isinstance(a, torch.fx.Proxy):
            return a
        if isinstance(a, (list, tuple)):
            found = find_proxy(*a)
        elif isinstance(a, dict):
            found = find_proxy(*a.values())
        else:
            continue
        if found is not None:
            return found
    return None


def record(proxy: torch.fx.Proxy, fn: Callable[..., Any], args: tuple) -> torch.fx.Proxy:
    """Record ``fn(*args)`` as one call_function node of the graph ``proxy`` belongs to."""
    return proxy.tracer.create_proxy("call_function", fn, args, {})


def node_if_traced(fn: Callable[..., Any], args: tuple) -> torch.fx.Proxy | None:
    """While torch.fx traces (a Proxy among ``args``): ``fn(*args)`` recorded as one node,
    returned in place of running ``fn``. Otherwise None: ``fn`` runs as usual."""
    proxy = find_proxy(*args)
    return None if proxy is None else record(proxy, fn, args)
