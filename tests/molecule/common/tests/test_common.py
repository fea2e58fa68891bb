"""State of a host after the preflight and common playbooks (profile cpu-demo)."""

import testinfra.host


def test_service_user_is_a_system_account(host: testinfra.host.Host) -> None:
    user = host.user("vllm")
    assert user.exists
    assert user.uid < 1000
    assert user.group == "vllm"
    assert user.home == "/var/lib/vllm"
    assert user.shell == "/usr/sbin/nologin"
    assert "video" in user.groups
    assert host.file("/var/lib/vllm").is_directory


def test_config_dir_is_closed_to_others(host: testinfra.host.Host) -> None:
    config = host.file("/etc/vllm")
    assert config.is_directory
    assert config.user == "root"
    assert config.group == "vllm"
    assert config.mode == 0o750


def test_weights_dir_is_in_the_connecting_users_home(host: testinfra.host.Host) -> None:
    weights = host.file("/root/model_weights")
    assert weights.is_directory
    assert weights.user == "root"
    assert weights.mode == 0o755


def test_service_user_reads_weights_through_a_closed_home(host: testinfra.host.Host) -> None:
    assert host.file("/root").mode & 0o001 == 0, "root's home must stay closed to others"
    acl = host.check_output("getfacl -cp /root")
    assert "user:vllm:--x" in acl.splitlines()
    probe = "/root/model_weights/.probe"
    host.check_output(f"echo weights > {probe}")
    try:
        assert host.check_output(f"runuser -u vllm -- cat {probe}") == "weights"
        denied = host.run("runuser -u vllm -- ls /root")
        assert denied.rc != 0, "traverse-only: the service user must not list the home"
    finally:
        host.check_output(f"rm -f {probe}")
