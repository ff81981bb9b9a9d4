"""``ovquant_openvino``: a thin torch.compile backend around OpenVINO's own partitioner and executor.

Why it exists: OpenVINO's ``openvino`` backend freezes weights with inductor's
``replace_params_with_constants(gm, tracing_context.params_flat, ...)``. From torch 2.13 dynamo
always inlines ``nn.Module``s, so weights reach the backend as graph inputs and ``params_flat`` is
empty: nothing is frozen, every weight becomes a *runtime input* of the OpenVINO IR, FakeQuantize
then runs on the weights at every call and convolutions run in bf16 (an "INT8" model slower than
FP32). The weights are still known: ``fw_metadata.static_input_indices`` lists them and the dynamo
graph's placeholders carry the real tensors (``meta["grapharg"].example``). This backend turns
those placeholders into constants and hands the graph to OpenVINO's ``Partitioner`` / ``execute``,
which then see exactly what the legacy stack gave them. Unlike OpenVINO's backend it never falls
back to inductor silently: a failure is raised.

On torch releases where ``params_flat`` is filled (<= 2.12) it freezes the way OpenVINO does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

BACKEND_NAME = "ovquant_openvino"


def _source_name(grapharg: Any) -> str:
    source = getattr(grapharg, "source", None)
    if source is None:
        return ""
    name = getattr(source, "name", "")
    return name() if callable(name) else str(name)  # a method up to torch 2.9, a property later


def _module_state_examples(gm: torch.fx.GraphModule) -> list[torch.Tensor | None]:
    """Per dynamo placeholder: its real tensor if it is module state (weight/buffer), else None."""
    examples: list[torch.Tensor | None] = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        grapharg = node.meta.get("grapharg")
        example = getattr(grapharg, "example", None)
        is_state = _source_name(grapharg).startswith("L['self']")
        examples.append(example if is_state and isinstance(example, torch.Tensor) else None)
    return examples


def _freeze_static_inputs(aot_gm: torch.fx.GraphModule, module_state: list[torch.Tensor | None]) -> list[int]:
    """Replace weight placeholders by constants; return the indices of the inputs that remain."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    tracing_context = torch._guards.TracingContext.try_get()
    if tracing_context is None or tracing_context.fw_metadata is None:
        return list(range(sum(1 for n in aot_gm.graph.nodes if n.op == "placeholder")))

    params_flat = getattr(tracing_context, "params_flat", None)
    if params_flat:  # torch <= 2.12: aot lifted the module's parameters itself
        from torch._inductor.freezing import replace_params_with_constants

        return list(replace_params_with_constants(aot_gm, params_flat, tracing_context.fw_metadata))

    static = set(getattr(tracing_context.fw_metadata, "static_input_indices", ()) or ())
    placeholders = [n for n in aot_gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(module_state):
        # aot added or removed inputs (e.g. tensor subclasses): we cannot map them safely.
        return list(range(len(placeholders)))
    kept: list[int] = []
    # The forward compiler runs under fake mode; constants must be the real tensors.
    with unset_fake_temporarily():
        for index, node in enumerate(placeholders):
            tensor = module_state[index]
            if index not in static or tensor is None:
                kept.append(index)
                continue
            attr = f"_ovquant_frozen_{index}"
            aot_gm.register_buffer(attr, tensor.detach())
            with aot_gm.graph.inserting_before(node):
                constant = aot_gm.graph.get_attr(attr)
            node.replace_all_uses_with(constant)
            aot_gm.graph.erase_node(node)
        aot_gm.graph.lint()
        aot_gm.recompile()
    return kept


def _remove_assert_ops(aot_gm: torch.fx.GraphModule) -> None:
    """Drop ``aten._assert_tensor_metadata`` (dtype checks ``torch.export`` leaves after ``.to()``).

    Inductor does the same (``remove_assert_ops``: the op lowers to a no-op there). OpenVINO cannot
    convert it, so its partitioner would leave it to PyTorch and the OpenVINO partition would return
    the checked tensors as extra outputs: one Python round trip per call for a check that does nothing.
    """
    asserts = list(aot_gm.graph.find_nodes(op="call_function", target=torch.ops.aten._assert_tensor_metadata.default))
    for node in asserts:
        aot_gm.graph.erase_node(node)
    if asserts:
        aot_gm.recompile()


def ovquant_openvino(gm: torch.fx.GraphModule, example_inputs: list[Any], options: dict | None = None) -> Callable:
    """The backend function (``torch.compile(m, backend="ovquant_openvino", options={...})``)."""
    from openvino.frontend.pytorch.torchdynamo.decompositions import (
        get_aot_decomposition_list,
        get_inf_decomposition_list,
    )
    from openvino.frontend.pytorch.torchdynamo.execute import execute
    from openvino.frontend.pytorch.torchdynamo.partition import Partitioner
    from torch._decomp import get_decompositions
    from torch._dynamo.backends.common import aot_autograd

    ov_options = {**(options or {}), "aot_autograd": True}
    module_state = _module_state_examples(gm)

    def forward_compiler(aot_gm: torch.fx.GraphModule, aot_inputs: list[Any]) -> Callable:
        kept = _freeze_static_inputs(aot_gm, module_state)
        _remove_assert_ops(aot_gm)
        partitioned = Partitioner(ov_options).make_partitions(aot_gm, ov_options)

        def run(args: list[Any]) -> Any:
            runtime_args = [args[i] for i in kept]
            args.clear()  # boxed calling convention: we own the list
            return execute(partitioned, *runtime_args, executor="openvino", options=ov_options)

        run._boxed_call = True  # type: ignore[attr-defined]
        return run

    decompositions = get_decompositions(get_inf_decomposition_list() + get_aot_decomposition_list())
    return aot_autograd(fw_compiler=forward_compiler, decompositions=decompositions)(gm, example_inputs)


def register() -> str:
    """Register the backend with torch.compile once; returns its name."""
    from torch._dynamo.backends.registry import register_backend

    if BACKEND_NAME not in torch.compiler.list_backends(exclude_tags=()):
        register_backend(compiler_fn=ovquant_openvino, name=BACKEND_NAME)
    return BACKEND_NAME
