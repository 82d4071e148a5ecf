"""Settings from flags, ``PATCHBAY_*`` variables and a TOML file (patchbay.config)."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from patchbay.activate.engine import EngineConfig
from patchbay.config import CONFIG_ENV, FIELDS, FLAGS, ConfigError, env_var, load_settings
from patchbay.settings import Secret, Settings

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "patchbay.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    assert load_settings({}, {}) == Settings()


def test_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    file = toml(tmp_path, 'port = 1\nhost = "file"\nlog_level = "debug"\n')
    env = {"PATCHBAY_PORT": "2", "PATCHBAY_HOST": "env"}
    settings = load_settings({"port": 3}, env, file)
    assert settings.port == 3  # flag
    assert settings.host == "env"  # variable
    assert settings.log_level == "debug"  # file
    assert settings.durability == "full"  # default


def test_env_values_are_parsed_and_empty_ones_ignored() -> None:
    settings = load_settings(
        {},
        {
            "PATCHBAY_DATA_DIR": "/srv/data",
            "PATCHBAY_DELIVERY_PROCESS": "false",
            "PATCHBAY_DEDUP_WINDOW_S": "60",
            "PATCHBAY_DELIVERY_CONCURRENCY": "4",
            "PATCHBAY_PORT": "",
        },
    )
    assert settings.data_dir == Path("/srv/data")
    assert settings.delivery_process is False
    assert settings.dedup_window_s == 60.0
    assert settings.delivery_concurrency == 4
    assert settings.port == 8080


def test_durations_in_seconds_or_with_a_unit(tmp_path: Path) -> None:
    """``log_retention_s`` (and every ``_s`` setting) takes seconds or a duration such as
    ``7d``, from the file, a variable or a flag; the retention default is a week."""
    assert Settings().log_retention_s == 7 * 86400 and Settings().log_retention_bytes == 0
    file = toml(tmp_path, 'log_retention_s = "3d"\ndedup_window_s = "12h"\n')
    from_file = load_settings({}, {}, file)
    assert (from_file.log_retention_s, from_file.dedup_window_s) == (3 * 86400, 12 * 3600)
    env = {"PATCHBAY_LOG_RETENTION_S": "90m", "PATCHBAY_LOG_RETENTION_BYTES": "1000000"}
    from_env = load_settings({}, env, file)
    assert (from_env.log_retention_s, from_env.log_retention_bytes) == (5400, 1_000_000)
    assert load_settings({"log_retention_s": "0"}, env).log_retention_s == 0
    with pytest.raises(ConfigError, match="PATCHBAY_LOG_RETENTION_S: expected seconds or a"):
        load_settings({}, {"PATCHBAY_LOG_RETENTION_S": "a week"})
    with pytest.raises(ConfigError, match="PATCHBAY_LOG_RETENTION_BYTES"):
        load_settings({}, {"PATCHBAY_LOG_RETENTION_BYTES": "-1"})


def test_config_file_from_patchbay_config(tmp_path: Path) -> None:
    file = toml(tmp_path, 'data_dir = "from-file"\ndelivery_page = 64\n')
    settings = load_settings({}, {CONFIG_ENV: str(file)})
    assert settings.data_dir == Path("from-file")
    assert EngineConfig.from_settings(settings).page == 64
    other = toml(tmp_path, 'data_dir = "given"\n')  # --config wins over PATCHBAY_CONFIG
    assert load_settings({}, {CONFIG_ENV: "/nowhere.toml"}, other).data_dir == Path("given")


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        ({}, {"PATCHBAY_PORT": "eighty"}, "PATCHBAY_PORT: Expected `int`"),
        ({}, {"PATCHBAY_DURABILITY": "sometimes"}, "PATCHBAY_DURABILITY"),
        ({}, {"PATCHBAY_DELIVERY_PAGE": "0"}, "PATCHBAY_DELIVERY_PAGE: Expected `int` >= 1"),
        ({}, {"PATCHBAY_DELIVERY_PROCESS": "perhaps"}, "PATCHBAY_DELIVERY_PROCESS"),
        ({"max_batches_per_request": "100"}, {}, "--max-batches: Expected `int`"),
        ({"colour": "blue"}, {}, "unknown setting 'colour'"),
    ],
)
def test_wrong_values_name_their_source(
    flags: dict[str, object], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(flags, env)


def test_file_type_errors_name_the_key(tmp_path: Path) -> None:
    file = toml(tmp_path, 'port = "8080"\n')  # a string is not an integer in the file
    with pytest.raises(ConfigError, match=re.escape(f"{file}: port: Expected `int`, got `str`")):
        load_settings({}, {}, file)


def test_unknown_file_keys_are_refused(tmp_path: Path) -> None:
    file = toml(tmp_path, "prot = 8080\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings({}, {}, file)
    with pytest.raises(ConfigError, match="unknown setting 'delivery'"):
        load_settings({}, {}, toml(tmp_path, "[delivery]\nconcurrency = 4\n"))


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml"):
        load_settings({}, {}, tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="config file"):
        load_settings({}, {}, toml(tmp_path, "port = \n"))


def test_admin_token_is_never_shown() -> None:
    settings = load_settings({}, {"PATCHBAY_ADMIN_TOKEN": "hunter2"})
    assert settings.admin_token == Secret("hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.admin_token)
    with pytest.raises(ConfigError) as caught:
        load_settings({"admin_token": 12345}, {})
    assert "12345" not in str(caught.value)


def test_settings_survive_pickling_for_the_child_processes() -> None:
    settings = load_settings({}, {"PATCHBAY_DELIVERY_MAX_AGE_S": "5"})
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings
    assert EngineConfig.from_settings(copy).policy.max_age_s == 5


def documented() -> dict[str, list[str]]:
    """The rows of the settings table in docs/configuration.md, by setting name."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0]] = cells
    return rows


def test_every_setting_is_documented() -> None:
    rows = documented()
    assert sorted(rows) == sorted(FIELDS), "docs/configuration.md and Settings differ"
    for field, (_, flag, variable, _default, meaning) in rows.items():
        assert flag == FLAGS.get(field, "-"), field
        assert variable == env_var(field), field
        assert meaning, field


@pytest.mark.slow
def patchbay(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in ``cwd`` with no ``PATCHBAY_*`` variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    return subprocess.run(
        [sys.executable, "-m", "patchbay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.mark.slow
def test_command_uses_a_setting_given_only_in_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-file"
    file = toml(tmp_path, f"data_dir = {str(data_dir)!r}\n")
    done = patchbay("inputs", "add", "app", "--type", "web", "--config", str(file), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (data_dir / "patchbay.db").exists()
    assert not (tmp_path / "patchbay-data").exists()
    listed = patchbay("inputs", "list", "--config", str(file), cwd=tmp_path)
    assert listed.stdout.splitlines()[1].startswith("app ")


@pytest.mark.slow
def test_command_names_a_wrong_setting(tmp_path: Path) -> None:
    done = patchbay("inputs", "list", "--config", str(tmp_path / "no"), cwd=tmp_path)
    assert done.returncode == 2
    assert "config file" in done.stderr
    assert "Traceback" not in done.stderr


def test_allowed_targets_is_a_list_in_the_file_and_comma_separated_in_a_variable(
    tmp_path: Path,
) -> None:
    env = {"PATCHBAY_ALLOWED_TARGETS": " partner.example, 10.0.0.0/8 ,"}
    assert load_settings({}, env).allowed_targets == ("partner.example", "10.0.0.0/8")
    file = toml(tmp_path, 'allowed_targets = ["hooks.example", "192.0.2.0/24"]\n')
    assert load_settings({}, {}, file).allowed_targets == ("hooks.example", "192.0.2.0/24")
    assert load_settings({}, {}).allowed_targets is None
    with pytest.raises(ConfigError, match=re.escape("PATCHBAY_ALLOWED_TARGETS: '169.254.0.0/16'")):
        load_settings({}, {"PATCHBAY_ALLOWED_TARGETS": "169.254.0.0/16"})
    bad = toml(tmp_path, 'allowed_targets = ["not a host"]\n')
    with pytest.raises(ConfigError, match="allowed_targets: 'not a host' is neither"):
        load_settings({}, {}, bad)


def test_outputs_dir_defaults_inside_the_data_dir(tmp_path: Path) -> None:
    from patchbay.activate.files import OutputsDir

    settings = load_settings({}, {"PATCHBAY_DATA_DIR": str(tmp_path)})
    assert OutputsDir.from_settings(settings).root == tmp_path / "outputs"
    custom = load_settings({}, {"PATCHBAY_OUTPUTS_DIR": str(tmp_path / "o")})
    assert OutputsDir.from_settings(custom).root == tmp_path / "o"
    assert pickle.loads(pickle.dumps(custom)) == custom


def token_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_tokens_come_from_files(tmp_path: Path) -> None:
    """``admin_token_file`` and ``metrics_token_file`` give their token (the first line);
    a token and its file are one setting: the source of higher precedence wins."""
    path = token_file(tmp_path, "from-the-file\nignored\n")
    flags = {"admin_token_file": path}
    assert load_settings(flags, {}).admin_token == Secret("from-the-file")
    env = {"PATCHBAY_METRICS_TOKEN_FILE": str(path)}
    assert load_settings({}, env).metrics_token == Secret("from-the-file")
    # the flag's file wins over the variable's token, the flag's token over the file's
    both = {"PATCHBAY_ADMIN_TOKEN": "from-env"}
    assert load_settings(flags, both).admin_token == Secret("from-the-file")
    env_file = {"PATCHBAY_ADMIN_TOKEN_FILE": str(path)}
    assert load_settings({"admin_token": "flag"}, env_file).admin_token == Secret("flag")
    assert "from-the-file" not in repr(load_settings(flags, {}))


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("t", 0o644, "admin_token_file {path} can be read by group or others; run: chmod 600"),
        ("\n", 0o600, "admin_token_file {path}: the file is empty"),
        (None, 0o600, "admin_token_file {path}: No such file"),
    ],
)
def test_unusable_token_files_are_refused(
    tmp_path: Path, text: str | None, mode: int, message: str
) -> None:
    path = token_file(tmp_path, text, mode) if text is not None else tmp_path / "none"
    with pytest.raises(ConfigError, match=re.escape(message.format(path=path))):
        load_settings({"admin_token_file": path}, {})


def test_a_token_and_its_file_from_one_source_are_refused(tmp_path: Path) -> None:
    path = token_file(tmp_path, "t")
    env = {"PATCHBAY_METRICS_TOKEN": "m", "PATCHBAY_METRICS_TOKEN_FILE": str(path)}
    with pytest.raises(ConfigError, match="metrics_token and metrics_token_file are both set"):
        load_settings({}, env)


def test_secret_values_are_hidden_in_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"metrics_token": 12345}, {})
    assert "12345" not in str(raised.value) and "***" in str(raised.value)


def test_the_scale_out_urls_are_checked_and_the_state_never_shown() -> None:
    settings = load_settings(
        {"log": "kafka://k1:9092,k2:9093"}, {"PATCHBAY_STATE": "postgresql://u:pw@db:5432/pb"}
    )
    assert settings.log == "kafka://k1:9092,k2:9093"
    assert isinstance(settings.state, Secret) and "pw" not in repr(settings)
    for flags, env, message in (
        ({"log": "http://k1:9092"}, {}, "--log: expected a URL starting with kafka://"),
        ({"log": "kafka://k1"}, {}, "expected kafka://HOST:PORT"),
        ({}, {"PATCHBAY_STATE": "mysql://u:pw@h/d"}, "PATCHBAY_STATE: expected a URL starting"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)) as caught:
            load_settings(flags, env)
        assert "pw" not in str(caught.value)


def test_the_scale_out_mode_needs_both_urls(tmp_path: Path) -> None:
    from patchbay.backends import open_backend

    settings = load_settings({"log": "kafka://127.0.0.1:9", "data_dir": tmp_path}, {})
    with pytest.raises(ConfigError, match=re.escape("needs both --log kafka://... and --state")):
        open_backend(settings)


def test_kafka_options_from_flags_variables_and_file(tmp_path: Path) -> None:
    """A table in the file (dotted keys as TOML nests them, numbers and booleans as text),
    ``KEY=VALUE,...`` in a variable (``\\,`` a comma in a value), a repeated flag; merged
    property by property, the higher source winning."""
    file = toml(
        tmp_path,
        "[kafka_options]\n"
        'security.protocol = "SASL_SSL"\n'
        'sasl.mechanism = "PLAIN"\n'
        '"ssl.ca.location" = "/etc/ssl/ca.pem"\n'
        "[kafka_producer_options]\n"
        "linger.ms = 5\n"
        "[kafka_consumer_options]\n"
        "check.crcs = true\n",
    )
    env = {"PATCHBAY_KAFKA_OPTIONS": r"sasl.mechanism=SCRAM-SHA-512, ssl.cipher.suites=A\,B\\"}
    flags = {"kafka_options": ("client.id=pb", "sasl.mechanism=SCRAM-SHA-256")}
    settings = load_settings(flags, env, file)
    assert settings.kafka_options == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "ssl.cipher.suites": "A,B\\",
        "client.id": "pb",
    }
    assert settings.kafka_producer_options == {"linger.ms": "5"}
    assert settings.kafka_consumer_options == {"check.crcs": "true"}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("bootstrap.servers", "the brokers are the log setting's"),
        ("enable.idempotence", "appends are idempotent"),
        ("acks", "acks=all"),
        ("request.required.acks", "acks=all"),
        ("message.timeout.ms", "an append gives up after the log's timeout"),
        ("enable.auto.commit", "nothing is committed to Kafka"),
        ("enable.auto.offset.store", "nothing is committed to Kafka"),
        ("group.id", "the processors' group is kafka_group"),
        ("auto.offset.reset", "a read starts at the offset Patchbay asks for"),
        ("transactional.id", "the log writes no transactions"),
        ("isolation.level", "the log has no transactions"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", "kafka_session_timeout_s"),
    ],
)
def test_kafka_options_patchbay_relies_on_are_refused_by_name(
    tmp_path: Path, key: str, reason: str
) -> None:
    message = f"{key} is set by Patchbay and cannot be changed: "
    for flags, env, file, where in (
        ({"kafka_options": (f"{key}=1",)}, {}, None, "--kafka-option: "),
        ({}, {"PATCHBAY_KAFKA_PRODUCER_OPTIONS": f"{key}=1"}, None, "PATCHBAY_KAFKA_PRODUCER_"),
        ({}, {}, toml(tmp_path, f'[kafka_consumer_options]\n"{key}" = "1"\n'), "kafka_consumer"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)) as raised:
            load_settings(flags, env, file)
        assert where in str(raised.value) and reason in str(raised.value)


def test_the_tuning_patchbay_sets_may_be_overridden() -> None:
    settings = load_settings(
        {"kafka_producer_options": ("linger.ms=20", "compression.type=zstd")},
        {"PATCHBAY_KAFKA_CONSUMER_OPTIONS": "fetch.wait.max.ms=500"},
    )
    assert settings.kafka_producer_options["compression.type"] == "zstd"
    assert settings.kafka_consumer_options == {"fetch.wait.max.ms": "500"}


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"PATCHBAY_KAFKA_OPTIONS": "sasl.password=a,b"}, "entry 2 of 2 is not KEY=VALUE"),
        ({"kafka_options": ("=x",)}, {}, "--kafka-option: entry 1 of 1 is not KEY=VALUE"),
        ({"kafka_options": ("a.b=1", "a.b=2")}, {}, "--kafka-option: a.b is given twice"),
        ({"kafka_options": ("Sasl.Mechanism=PLAIN",)}, {}, "'Sasl.Mechanism' is not a"),
        ({"kafka_options": ("linger.ms=",)}, {}, "linger.ms has no value"),
        ({"kafka_options": ("error_cb=x",)}, {}, "error_cb is a Python callback"),
        ({"kafka_options": ("logger=x",)}, {}, "librdkafka's lines go to Patchbay's log"),
        ({"kafka_options": 3}, {}, "expected a table of librdkafka properties"),
    ],
)
def test_malformed_kafka_options_are_refused_without_their_values(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_settings(flags, env)
    assert "a,b" not in str(raised.value)


def test_kafka_option_values_that_are_not_text_in_the_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("kafka_options: ssl.keystore.location:")):
        load_settings({}, {}, toml(tmp_path, '[kafka_options]\nssl.keystore.location = ["a"]\n'))


def test_secret_kafka_options_are_never_shown(tmp_path: Path) -> None:
    """A value whose property holds a secret is a Secret: not in ``repr``, nor pickled
    away, nor in an error about the setting."""
    env = {
        "PATCHBAY_KAFKA_OPTIONS": "sasl.username=pb,sasl.password=hunter2",
        "PATCHBAY_KAFKA_CONSUMER_OPTIONS": "ssl.key.password=k3y,ssl.key.pem=PEMDATA",
    }
    file = toml(tmp_path, '[kafka_producer_options]\nsasl.oauthbearer.client.secret = "s3cr3t"\n')
    settings = load_settings({}, env, file)
    assert settings.kafka_options["sasl.password"] == Secret("hunter2")
    assert settings.kafka_options["sasl.username"] == "pb"
    assert settings.kafka_producer_options["sasl.oauthbearer.client.secret"] == Secret("s3cr3t")
    shown = repr(settings) + str(settings)
    for secret in ("hunter2", "k3y", "PEMDATA", "s3cr3t"):
        assert secret not in shown
    assert pickle.loads(pickle.dumps(settings)) == settings
    with pytest.raises(ConfigError) as raised:
        load_settings({}, {"PATCHBAY_KAFKA_OPTIONS": "sasl.password=hun,ter2,acks=1"})
    assert "hun" not in str(raised.value) and "ter2" not in str(raised.value)


def test_kafka_option_flags_are_repeatable_on_every_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from patchbay.cli import main

    refused = ["--kafka-option", "client.id=pb", "--kafka-producer-option", "acks=1"]
    result = CliRunner().invoke(main, ["inputs", "list", *refused, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--kafka-producer-option: acks is set by Patchbay" in result.output
    taken = ["--kafka-option", "client.id=pb", "--kafka-consumer-option", "check.crcs=true"]
    result = CliRunner().invoke(main, ["inputs", "list", *taken, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no Patchbay data" in result.output
