"""The deployer configuration file: one YAML document describing each environment.

One model per section, each validating itself on construction:

- :class:`Config` — the file: ``state_dir``, ``runner`` (:class:`RunnerConfig`) and
  ``environments``, each an :class:`EnvironmentConfig`;
- ``app`` (:class:`AppConfig`, with its :class:`HealthCheckConfig`) and ``store``
  (:class:`StoreConfig`);
- ``load_balancer``: one model per kind (:class:`HAProxyConfig`);
- ``strategy``: one model per kind, told apart by ``kind`` (:class:`RollingStrategy`,
  :class:`BlueGreenStrategy` with its :class:`LegConfig`);
- ``lock`` (:class:`LockConfig`); ``analysis`` (:class:`~deployer.analysis.AnalysisConfig`);
- ``gameday`` (:class:`GameDayConfig`): whether game days may inject faults there.
- for the environment's runner: ``pointer`` (one model per kind: :class:`FilePointerConfig`,
  :class:`HttpPointerConfig`, :class:`SsmPointerConfig`), ``agent`` (:class:`AgentConfig`) and
  ``promotion`` (:class:`PromotionConfig`);
- ``gates`` (:class:`GatesConfig`): windows, freezes, approvals, change records, decision
  records, evidence.

:func:`load_config` reads a file and raises :class:`~deployer.ConfigError` naming the file, the
field (as a dotted path) and the bad value.
"""

from __future__ import annotations

from ._agent import (
    AgentConfig,
    FilePointerConfig,
    HttpPointerConfig,
    PointerConfig,
    PromotionConfig,
    SsmPointerConfig,
)
from ._app import AppConfig, HealthCheckConfig, StoreConfig
from ._environment import Config, EnvironmentConfig, RunnerConfig
from ._gameday import GameDayConfig
from ._gates import (
    DAYS,
    ApprovalsConfig,
    ApproverConfig,
    ChangeApiConfig,
    DecisionRecordConfig,
    EvidenceConfig,
    FreezeConfig,
    GatesConfig,
    RequesterConfig,
    WindowConfig,
    time_zone,
)
from ._load import DEFAULT_CONFIG_NAME, default_config_path, load_config
from ._load_balancer import HAProxyConfig, LoadBalancerConfig
from ._lock import DEFAULT_LOCK_DIR, LockConfig
from ._strategy import BlueGreenStrategy, LegConfig, RollingStrategy, StrategyConfig, StrategyKind

__all__ = [
    "DAYS",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_LOCK_DIR",
    "AgentConfig",
    "AppConfig",
    "ApprovalsConfig",
    "ApproverConfig",
    "BlueGreenStrategy",
    "ChangeApiConfig",
    "Config",
    "DecisionRecordConfig",
    "EnvironmentConfig",
    "EvidenceConfig",
    "FilePointerConfig",
    "FreezeConfig",
    "GameDayConfig",
    "GatesConfig",
    "HAProxyConfig",
    "HealthCheckConfig",
    "HttpPointerConfig",
    "LegConfig",
    "LoadBalancerConfig",
    "LockConfig",
    "PointerConfig",
    "PromotionConfig",
    "RequesterConfig",
    "RollingStrategy",
    "RunnerConfig",
    "SsmPointerConfig",
    "StoreConfig",
    "StrategyConfig",
    "StrategyKind",
    "WindowConfig",
    "default_config_path",
    "load_config",
    "time_zone",
]
