"""`runtime.compile` compiles the whole objective step: the model calls and the loss of every objective."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.training import TrainConfig
from vitkit.training import trainer as trainer_module
from vitkit.training.objectives import Batch, ObjectiveStep
from vitkit.training.trainer import create_trainer


def recording_compile(graphs: list[torch.fx.GraphModule]):
    """torch.compile with a backend that records each captured graph and runs it as is (no code generation)."""

    def backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph)
        return graph.forward

    original = torch.compile

    def compile_(module: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        return original(module, backend=backend, **kwargs)

    return compile_


def captured_calls(graphs: list[torch.fx.GraphModule]) -> set[str]:
    """The names of the functions and methods the captured graphs call."""
    names = set()
    for graph in graphs:
        for node in graph.graph.nodes:
            if node.op in ("call_function", "call_method"):
                names.add(getattr(node.target, "__name__", str(node.target)))
            if node.op == "call_module":
                names.add(type(graph.get_submodule(node.target)).__name__)
    return names


def teacher(path: Path) -> Path:
    """A tiny untrained ConvNet teacher for the digits at 16 px."""
    torch.manual_seed(1)
    model = vitkit.create_model("resnet20", num_classes=10, img_size=16, width=4)
    return vitkit.save(model, path, class_names=[str(d) for d in range(10)])


@pytest.mark.parametrize("objective", ["supervised", "mpp", "distill"])
def test_every_objective_step_is_compiled_and_computes_the_same_loss(objective, tmp_path, monkeypatch):
    sections = {
        "supervised": {"name": "supervised"},
        "mpp": {"name": "mpp"},
        "distill": {"name": "distill", "distill": {"teacher": str(teacher(tmp_path / "teacher"))}},
    }
    config = TrainConfig().replace(
        {
            "objective": sections[objective],
            "data.limit_per_class": 2,
            "run.batch_size": 8,
            "model.depth": 1,
            "model.pool": "token",  # the distillation token sits beside a class token
            "runtime.threads": 1,
            "runtime.precision": "fp32",
            "runtime.compile": True,
        }  # fmt: skip
    )
    graphs: list[torch.fx.GraphModule] = []
    torch._dynamo.reset()
    monkeypatch.setattr(trainer_module.torch, "compile", recording_compile(graphs))
    trainer = create_trainer(config, tmp_path / "unused")
    try:
        images = torch.randn(8, 3, 16, 16)
        targets = torch.nn.functional.one_hot(torch.arange(8) % 10, 10).float()
        batch = Batch(images, targets, targets.argmax(1))
        eager = ObjectiveStep(trainer.learner.model, trainer.learner.objective)
        torch.manual_seed(0)
        expected = eager(batch).loss
        torch.manual_seed(0)
        compiled = trainer.learner.step_module(batch).loss
    finally:
        trainer.runtime.close()
        torch._dynamo.reset()
    calls = captured_calls(graphs)
    # The model's blocks and the objective's loss are both inside compiled graphs, whichever model method it calls.
    assert "layer_norm" in calls or "LayerNorm" in calls, sorted(calls)
    assert "cross_entropy" in calls, sorted(calls)
    torch.testing.assert_close(compiled, expected)
