"""The user data of an autoscaled pool's launch template: public material only (pure).

What every EC2 host's first boot does (flakefleet/plan/firstboot.py: the deploy keys, the fleet's
signing key trusted by nix-daemon), then: the pool's pull configuration written to
/etc/flakefleet/pull.json, the pull agent's store path realised from the stack's binary cache
(signed by the fleet's key, which Nix checks), and the agent started in a transient unit of its
own, so that switching to the pool's system (which turns amazon-init off) cannot stop it half-way.
The join token is not here: the agent reads it from SSM with the instance profile's credentials.
"""

from __future__ import annotations

import json
import shlex

from flakefleet.plan.firstboot import first_boot_user_data

PULL_CONFIG = "/etc/flakefleet/pull.json"
EC2_USER_DATA_MAX = 16384  # bytes, before base64 (RunInstances: "User data is limited to 16 KB")


def pull_config(cluster: str, pool: str, region: str, bucket: str, pointer: str, system_hash: str,
                trusted_key: str, token_parameter: str, group: str, hook: str, health_timeout_s: int,
                settle_s: int, *, drain_hook: str = "", drain_timeout_s: int = 300) -> dict:
    """What the agents are told (nixos/host/flakefleet_pull.py and flakefleet_drain.py read these keys)."""
    return {"cluster": cluster, "pool": pool, "region": region, "bucket": bucket, "pointer": pointer,
            "system_hash": system_hash, "trusted_key": trusted_key, "token_parameter": token_parameter,
            "group": group, "hook": hook, "health_timeout_s": health_timeout_s, "settle_s": settle_s,
            "drain_hook": drain_hook, "drain_timeout_s": drain_timeout_s,
            "substituter": f"s3://{bucket}?region={region}"}


def pulled_user_data(config: dict, agent: str, authorized_keys: list[str], signing_public_key: str) -> str:
    """The whole script: first boot, then the pull (config from `pull_config`)."""
    body = json.dumps(config, sort_keys=True)
    substituter = shlex.quote(config["substituter"])
    return first_boot_user_data(authorized_keys, signing_public_key) + f"""# flakefleet pull (see flakefleet/pull/userdata.py)
mkdir -p /etc/flakefleet
cat > {PULL_CONFIG} <<'FLAKEFLEET_EOF'
{body}
FLAKEFLEET_EOF
chmod 0644 {PULL_CONFIG}
nix-store --realise {agent} --option extra-substituters {substituter}
systemd-run --unit=flakefleet-pull --collect --service-type=exec --property=StandardOutput=journal+console \\
  {agent}/bin/flakefleet-pull {PULL_CONFIG}
"""
