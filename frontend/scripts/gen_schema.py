"""Writes frontend/src/generated/schema.ts, the names the dashboard shares with the backend."""

# The metric names and the tag naming are defined once, in the backend's schema module
# (tb_attention.storage.schema, or tb_attention.metadata before it was split). This script reads them from
# there; `check_bundle.sh` fails when the committed file differs from what it writes.

import importlib
import inspect
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "frontend" / "src" / "generated" / "schema.ts"


def schema_module():
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module("tb_attention.storage.schema")
    except ModuleNotFoundError as e:
        if e.name != "tb_attention.storage.schema":
            raise
        return importlib.import_module("tb_attention.metadata")


# Placeholders valid wherever a name is checked (group names are [a-z_]+), swapped for {tag},
# {metric} and {group} in the templates.
PLACEHOLDERS = {"tag": "tba_tag_placeholder", "metric": "tba_metric_placeholder", "group": "tba_group_placeholder"}


def templates(schema):
    """Tag forms as templates, read off the schema's own functions by calling them on placeholders."""
    tag, metric, group = PLACEHOLDERS["tag"], PLACEHOLDERS["metric"], PLACEHOLDERS["group"]
    forms = {"exemplars": schema.exemplars_tag(tag), "metric": schema.metric_tag(tag, metric)}
    if "group" in inspect.signature(schema.metric_tag).parameters:
        forms["groupMetric"] = schema.metric_tag(tag, metric, group=group)
    else:  # the contract's form (http_api.md, "Metric definitions") until the schema names groups
        forms["groupMetric"] = schema.metric_tag(schema.metric_tag(tag, group), metric)
    for name, placeholder in PLACEHOLDERS.items():
        forms = {k: v.replace(placeholder, "{" + name + "}") for k, v in forms.items()}
    return forms


def render(schema):
    constants = {
        "PLUGIN_NAME": schema.PLUGIN_NAME,
        "METRICS": list(schema.METRICS),
        "POS_PREFIX": schema.POS_PREFIX,
        "POS_FROM_PREFIX": schema.POS_FROM_PREFIX,
        "TAG_FORMS": templates(schema),
    }
    if hasattr(schema, "VIEWS"):
        constants["VIEWS"] = list(schema.VIEWS)
    lines = [
        f"// Generated from {schema.__name__} by frontend/scripts/gen_schema.py; do not edit.",
        "// Run `python frontend/scripts/gen_schema.py` after changing the backend's schema.",
        "",
    ]
    for name, value in constants.items():
        lines.append(f"export const {name} = {json.dumps(value, indent=2)} as const;")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    out = pathlib.Path(argv[1]) if len(argv) > 1 else OUT
    out.write_text(render(schema_module()))


if __name__ == "__main__":
    main(sys.argv)
