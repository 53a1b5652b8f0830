"""ONNX export of in-place activations right after ops whose result is a numpy view of a temporary (instance and group
norm, Conv1d, 1-d pools): CycleGAN's Conv -> InstanceNorm2d -> ReLU(inplace=True) refused to export (the trace wrote
in place only into arrays owning their storage). A view whose base another tensor still reads keeps refusing."""
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn

pytest.importorskip("onnxruntime", reason="the export verifies its file in onnxruntime")


@pytest.mark.parametrize("name", ["instance2d", "group", "conv1d", "maxpool1d"])
def test_inplace_activation_after_a_view_producing_op_exports(name, tmp_path):
    fg.manual_seed(0)
    if name == "instance2d":
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True), nn.ReLU(True))
        x = fg.randn(2, 3, 5, 6)
    elif name == "group":
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(inplace=True),
                              nn.Conv2d(4, 2, 1))
        x = fg.randn(2, 3, 5, 6)
    elif name == "conv1d":
        model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv1d(4, 2, 1))
        x = fg.randn(2, 3, 9)
    else:
        model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.InstanceNorm1d(4), nn.MaxPool1d(2), nn.Hardswish(inplace=True))
        x = fg.randn(2, 3, 11)
    report = fg.onnx.export(model.eval(), (x,), str(tmp_path / f"{name}.onnx"))
    assert report.ok, report


def test_inplace_into_a_view_whose_base_is_still_read_refuses(tmp_path):
    class Shared(nn.Module):
        def forward(self, x):
            y = x * 2
            F.relu_(y.reshape(-1))  # eager: y sees the write; the trace cannot express it
            return y + 1

    with pytest.raises(RuntimeError, match="inplace=True"):
        fg.onnx.export(Shared(), (fg.randn(2, 3),), str(tmp_path / "shared.onnx"))
