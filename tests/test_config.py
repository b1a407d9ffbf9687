import pytest

from clavs.config import ConfigError, parse_override, resolve_config


def test_default_config_resolves_with_method_hparams():
    c = resolve_config()
    assert c["method"]["name"] == "atlas"
    assert c["method"]["lra"] is True and c["method"]["pre_conditioning"] is True
    assert c["protocol"]["name"] == "cil" and c["protocol"]["split"] == "11-2"
    assert c["preset"] == "default"


def test_overrides_and_options_apply():
    c = resolve_config(preset="smoke", options={"protocol.name": "til", "seed": 5},
                       overrides=["method.lra=false", "train.lr=3e-4", "model.lora_targets=[qkv, proj]"])
    assert c["protocol"]["name"] == "til" and c["seed"] == 5
    assert c["method"]["lra"] is False
    assert c["train"]["lr"] == pytest.approx(3e-4)
    assert c["model"]["lora_targets"] == ["qkv", "proj"]
    assert c["data"]["synth_preset"] == "smoke"


def test_method_switch_changes_hparams_section():
    c = resolve_config(overrides=["method.name=finetune"])
    assert c["method"] == {"name": "finetune"}


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*train\.lr"):
        resolve_config(overrides=["train.lrr=1"])
    with pytest.raises(ValueError, match=r"unknown .*method.lra.*finetune"):
        resolve_config(method="finetune", overrides=["method.lra=false"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="protocol.name='xyz'"):
        resolve_config(options={"protocol.name": "xyz"})
    with pytest.raises(ConfigError, match="train.epochs"):
        resolve_config(overrides=["train.epochs=0"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("nokey")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        resolve_config(method="nope")


def test_tfcl_defaults_to_the_papers_split_unless_named():
    assert resolve_config(overrides=["protocol.name=tfcl"])["protocol"]["split"] == "31-5"
    assert resolve_config(options={"protocol.name": "tfcl"})["protocol"]["split"] == "31-5"
    assert resolve_config(overrides=["protocol.name=tfcl", "protocol.split=20-4"])["protocol"]["split"] == "20-4"
    assert resolve_config(overrides=["protocol.name=til"])["protocol"]["split"] == "11-2"


def test_select_metric_is_validated_and_words_stay_words():
    with pytest.raises(ConfigError, match="train.select_metric='mAP'"):
        resolve_config(overrides=["train.select_metric=mAP"])
    assert resolve_config(overrides=["experiment=nan"])["experiment"] == "nan"
    assert resolve_config(overrides=["train.lr=1e-3"])["train"]["lr"] == pytest.approx(1e-3)


def test_a_config_written_before_a_later_key_still_validates():
    """Runs made before train.val_matrix / train.keep_checkpoints existed (their config.yaml lacks
    them) are restored, resumed and reported; a present but wrong value is still refused."""
    from clavs.config import validate_config

    c = resolve_config()
    for key in ("val_matrix", "keep_checkpoints"):
        c["train"].pop(key, None)
    validate_config(c)
    c["train"]["val_matrix"] = "some"
    with pytest.raises(ConfigError, match="train.val_matrix='some'"):
        validate_config(c)
