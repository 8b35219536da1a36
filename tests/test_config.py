"""The composed config as typed, range-checked settings: defaults, and bad values refused by name."""

import re

import pytest

from qa_compress import prune
from qa_compress.errors import UserError
from qa_compress.job import bookkeeping
from qa_compress.job.config import from_hydra
from qa_compress.model import families

from .conftest import MINILM_DIR, ROOT, compose_config

# conf/model/ entries for fine-tuned SQuAD 2.0 checkpoints on the Hub (the other two are models to fine-tune)
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if p.stem not in {"distilbert", "minilm_l6"})


def test_default_config_is_distilbert_on_squad_v2_without_compression():
    job = from_hydra(compose_config([]))
    assert job.model.name_or_path == "distilbert-base-uncased"
    assert (job.dataset.hub_name, job.dataset.max_seq_length, job.dataset.doc_stride) == (
        "rajpurkar/squad_v2",
        384,
        128,
    )
    assert (job.training.learning_rate, job.training.num_train_epochs, job.training.batch_size) == (3e-5, 2, 16)
    assert (job.pruning.name, job.quantization.name) == ("none", "none")


def test_minilm_l6_resolves_to_the_installed_package():
    job = from_hydra(compose_config(["model=minilm_l6"]))
    assert job.model.name_or_path == str(MINILM_DIR)
    assert (MINILM_DIR / "config.json").is_file()


def test_there_is_a_preset_for_each_popular_squad2_family():
    kinds = {from_hydra(compose_config([f"model={preset}"])).model.model_type for preset in PRESETS}
    assert kinds == {"bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "albert", "distilbert"}


@pytest.mark.parametrize("preset", PRESETS)
def test_each_checkpoint_preset_evaluates_a_hub_model_of_a_known_family_as_it_is(preset):
    job = from_hydra(compose_config([f"model={preset}"]))
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", job.model.name_or_path)  # a Hub id: owner/name
    assert families.of(job.model.model_type) is not None
    assert (job.model.name, job.training.name, job.model.trust_remote_code) == (preset, "none", False)
    assert from_hydra(compose_config([f"model={preset}", "training=finetune"])).training.name == "finetune"


def test_runs_are_named_after_the_checkpoint_when_name_or_path_overrides_the_groups(tmp_path):
    squad_model = tmp_path / "minilm-l6-squad2"
    (squad_model / "model").mkdir(parents=True)
    cases = [
        ([], "distilbert"),
        (["model=minilm_l6"], "minilm_l6"),
        ([f"model.name_or_path={squad_model}"], "minilm-l6-squad2"),
        (["model=minilm_l6", f"model.name_or_path={squad_model}"], "minilm-l6-squad2"),
        ([f"model.name_or_path={squad_model / 'model'}"], "minilm-l6-squad2/model"),  # a generic directory name
        (["model.name_or_path=bert-base-uncased"], "bert-base-uncased"),
        ([f"model.name_or_path={squad_model}", "model.name=mine"], "mine"),
    ]
    for overrides, name in cases:
        assert from_hydra(compose_config(overrides)).model.name == name, overrides


def test_each_method_gets_its_own_settings_and_they_reach_the_dump():
    job = from_hydra(compose_config(["pruning=structured", "pruning.heads_amount=0.5", "quantization=onnx_int8"]))
    assert isinstance(job.pruning, prune.get("structured").settings)
    dumped = job.model_dump()
    assert dumped["pruning"]["heads_amount"] == 0.5 and dumped["pruning"]["importance"] == "weight_norm"
    assert dumped["quantization"] == {"name": "onnx_int8", "per_channel": True}
    assert prune.describe(job.pruning) == "structured heads 0.5 ffn 0.5"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["pruning=l1_unstructured", "pruning.amount=1.5"],
            "pruning.amount=1.5: Input should be less than or equal to 1",
        ),
        (["pruning=l1_unstructured", "pruning.amount=-0.1"], "pruning.amount=-0.1"),
        (["dataset.doc_stride=400"], "dataset.doc_stride=400 must be smaller than dataset.max_seq_length=384"),
        (["training.learning_rate=0"], "training.learning_rate=0: Input should be greater than 0"),
        (["model.model_type=gpt2"], "model.model_type='gpt2': not a model_type any family describes"),
        (["benchmark.repeats=0"], "benchmark.repeats=0"),
        (["seed=99999999999999999999999"], "seed=99999999999999999999999: Input should be less than 4294967296"),
        (["predict.null_score_diff_threshold=nan"], "predict.null_score_diff_threshold=nan: Input should be a finite"),
        (["predict.null_threshold=auto"], "predict.null_threshold='auto'"),
        (["pruning.distill=true"], "pruning.distill=true: distillation happens during recovery"),
        (
            ["pruning=l1_unstructured", "pruning.schedule=gradual", "pruning.finetune_steps=4"],
            "pruning.gradual_stages=8 stages need",
        ),
        (["dataset=squad_json"], "dataset.validation_file=null"),
        (["pruning=structured", "pruning.heads_amount=1.0"], "pruning.heads_amount=1.0: Input should be less than 1"),
        (["pruning.finetune_steps=10"], "pruning.finetune_steps=10 needs a pruning method"),
        (["pruning=structured", "pruning.importance=taylor"], "pruning.importance='taylor'"),
        (["pruning=random", "pruning.layer_patterns=[]"], "pruning.layer_patterns=[]: give at least one pattern"),
        (["quantization.name=int3"], "quantization=int3: unknown quantization method (choose from"),
        (["pruning.name=magnitude"], "pruning=magnitude: unknown pruning method (choose from"),
        (["quantization=dynamic_int8", "+quantization.bits=4"], "quantization.bits: unknown key"),
        (
            [
                "training=none",
                "dataset=squad_json",
                "dataset.validation_file=v.json",
                "pruning=l1_unstructured",
                "pruning.finetune_steps=5",
            ],
            "dataset.train_file=null: pruning=l1_unstructured with these settings read training data",
        ),
    ],
)
def test_out_of_range_values_are_refused_by_name(overrides, message):
    with pytest.raises(UserError) as err:
        from_hydra(compose_config(overrides))
    assert message in str(err.value)


def test_a_key_of_another_method_is_refused_by_hydra_before_any_work():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Could not override 'pruning.amount'"):
        compose_config(["pruning=structured", "pruning.amount=0.3"])


@pytest.mark.parametrize(
    ("overrides", "uncompressed"),
    [
        (["pruning=none", "quantization=none"], True),
        (["pruning=l1_unstructured", "pruning.amount=0.0"], True),
        (["pruning=structured", "pruning.heads_amount=0", "pruning.ffn_amount=0"], True),
        (["pruning=l1_unstructured", "pruning.amount=0.0", "pruning.finetune_steps=1"], False),  # recovery trains
        (["pruning=l1_unstructured", "pruning.amount=0.0", "quantization=dynamic_int8"], False),
    ],
)
def test_every_spelling_of_no_compression_is_one_uncompressed_model(overrides, uncompressed):
    job = from_hydra(compose_config(overrides))
    assert bookkeeping.is_uncompressed(job) is uncompressed
    if uncompressed:  # what a sweep's reference is found by, whichever way the job says it
        assert bookkeeping.uncompressed_hash(job) == bookkeeping.uncompressed_hash(from_hydra(compose_config([])))
