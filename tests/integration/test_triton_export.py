"""`cnnkit export --format triton`: a model repository whose config parses into Triton's own schema."""

import json

from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cnnkit.cli import main


def parse(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_repository_parses_into_tritons_schema_and_its_onnx_verifies(trained, tmp_path):
    repo = tmp_path / "repo"
    args = ["export", trained.out_dir, "--format", "triton", "--out", str(repo), "--with-torchscript"]
    r = CliRunner().invoke(main, [*args, "--instance-kind", "cpu", "--preferred-batch-sizes", "8,32", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True
    name = "cnnkit-mnist-sample"  # the one naming rule, from the model's metadata
    assert sorted(p.name for p in repo.iterdir()) == [name, f"{name}-libtorch"]

    cfg = parse(repo / name / "config.pbtxt")
    assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 256
    (inp,) = cfg.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", mc.TYPE_UINT8, [1, 28, 28])
    (out,) = cfg.output
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == ("logits", mc.TYPE_FP32, [10], "labels.txt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    assert (repo / name / "labels.txt").read_text().splitlines() == list("0123456789")

    ts = parse(repo / f"{name}-libtorch" / "config.pbtxt")
    assert ts.platform == "pytorch_libtorch" and [o.name for o in ts.output] == ["logits__0"]
    assert (repo / f"{name}-libtorch" / "1" / "model.pt").stat().st_size > 100_000  # the folded weights

    onnx_file = repo / name / "1" / "model.onnx"
    r = CliRunner().invoke(main, ["verify", str(onnx_file), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["passed"] is True, r.output

    # a second export is the model's next version, beside the first (Triton serves the latest); nothing deleted,
    # nothing staged left behind; the config describes the newest
    first = (repo / name / "1" / "model.onnx").read_bytes()
    (repo / name / "7").mkdir()  # a version someone else put there
    (repo / name / "7" / "model.onnx").write_bytes(b"theirs")
    again = ["export", trained.out_dir, "--format", "triton", "--out", str(repo), "--no-verify", "--json"]
    assert CliRunner().invoke(main, again).exit_code == 0
    r = CliRunner().invoke(main, again)
    assert r.exit_code == 0 and json.loads(r.stdout)["artefacts"]["onnx"].endswith(f"{name}/9/model.onnx")
    assert sorted(p.name for p in (repo / name).iterdir() if p.is_dir()) == ["1", "7", "8", "9"]
    assert (repo / name / "1" / "model.onnx").read_bytes() == first
    assert (repo / name / "7" / "model.onnx").read_bytes() == b"theirs"
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]
    assert parse(repo / name / "config.pbtxt").instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO


def test_a_model_folder_cnnkit_did_not_write_is_never_touched(trained, tmp_path):
    repo = tmp_path / "repo"
    (repo / "theirs" / "1").mkdir(parents=True)
    (repo / "theirs" / "config.pbtxt").write_text('name: "theirs"\n')
    (repo / "theirs" / "1" / "model.onnx").write_bytes(b"theirs")
    args = ["export", trained.out_dir, "--format", "triton", "--out", str(repo), "--model-name", "theirs"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "not written by cnnkit export" in r.stderr and "Traceback" not in r.output
    assert (repo / "theirs" / "1" / "model.onnx").read_bytes() == b"theirs"
    assert (repo / "theirs" / "config.pbtxt").read_text() == 'name: "theirs"\n'


def test_bad_triton_options_are_one_line(trained, tmp_path):
    base = ["export", trained.out_dir, "--format", "triton", "--out", str(tmp_path / "repo")]
    for extra, match in (
        (["--model-name", "../escape"], "model name '../escape'"),
        (["--preferred-batch-sizes", "16,999"], "not within 1..max batch size 256"),
        (["--preferred-batch-sizes", "a,b"], "comma-separated integers"),
    ):
        r = CliRunner().invoke(main, [*base, *extra])
        assert r.exit_code in (1, 2) and match in r.stderr and "Traceback" not in r.output, r.output
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
