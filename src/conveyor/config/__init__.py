"""conveyor.yml: its models, loading with line:column errors, JSON Schema and starter text."""

from conveyor.config.durations import (
    Duration,
    Percent,
    PositiveDuration,
    format_duration,
    format_percent,
    parse_duration,
    parse_percent,
)
from conveyor.config.environment import (
    Analysis,
    Environment,
    Hosts,
    HostsCommand,
    Strategy,
    VerifyCheck,
)
from conveyor.config.errors import ConfigError, ConfigIssue
from conveyor.config.loader import CONFIG_FILENAME, load_config, parse_config
from conveyor.config.metric_source import MetricSourceSetting, Prometheus, PrometheusQueries
from conveyor.config.models import (
    Artifact,
    Config,
    HealthCheck,
    Hooks,
    Notify,
    NotifyEvent,
    Service,
    Step,
)
from conveyor.config.monitor import Monitor
from conveyor.config.routing import HostRouting, Routing, effective_routing
from conveyor.config.schema import config_json_schema
from conveyor.config.template import STARTER_CONFIG, starter_config, suggest_app_name
from conveyor.config.values import Batch, HttpProbe
from conveyor.config.window import Window

__all__ = [
    "CONFIG_FILENAME",
    "STARTER_CONFIG",
    "Analysis",
    "Artifact",
    "Batch",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Duration",
    "Environment",
    "HealthCheck",
    "Hooks",
    "HostRouting",
    "Hosts",
    "HostsCommand",
    "HttpProbe",
    "MetricSourceSetting",
    "Monitor",
    "Notify",
    "NotifyEvent",
    "Percent",
    "PositiveDuration",
    "Prometheus",
    "PrometheusQueries",
    "Routing",
    "Service",
    "Step",
    "Strategy",
    "VerifyCheck",
    "Window",
    "config_json_schema",
    "effective_routing",
    "format_duration",
    "format_percent",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_percent",
    "starter_config",
    "suggest_app_name",
]
