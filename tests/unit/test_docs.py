"""The docs match the code: the README's settings table is the one rendered from `Settings`, every relative link in
README.md and docs/ resolves in the repository, and every repository path they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import Settings
from tools.settings_table import END, START, render_table, replace_between_markers
from tools.train_demo_model import VOCABULARY

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *(ROOT / "worker" / "models" / name / "README.md" for name in ("demo", "demo-flow")),
]
# `[text](target)` and `![alt](target)`; targets with a scheme or only an anchor are not files.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A repository path in prose, code spans or code blocks: a top-level folder of this repository and what follows it.
# The look-behind keeps out URLs and longer paths that merely contain such a folder name.
# Prompts in the README's examples: JSON `"prompt": "..."`, multipart `prompt='...'`, `imagegen generate "..."`.
PROMPT = re.compile(r'\\?"prompt\\?": \\?"([^"\\]*)' r"|prompt='([^']*)'" r'|imagegen generate "([^"]*)"')
REPO_PATH = re.compile(
    r"(?<![\w/.$~-])((?:core|service|client|launcher|worker|tools|tests|bench|docker|deploy|docs|\.ci)/[\w./{},-]*)"
)


def _relative_links(text: str) -> list[str]:
    targets = (match.group(1) for match in LINK.finditer(text))
    return [target for target in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", target)]


def _named_paths(text: str) -> list[str]:
    """Repository paths the text names, with one `{a,b}` alternative expanded."""
    paths = []
    for raw in REPO_PATH.findall(text):
        path = raw.rstrip(".,:;")
        braces = re.search(r"\{([^}]*)\}", path)
        if braces:
            paths += [path[: braces.start()] + part + path[braces.end() :] for part in braces.group(1).split(",")]
        else:
            paths.append(path)
    return paths


def test_readme_settings_table_is_rendered_from_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert START in readme and END in readme
    assert replace_between_markers(readme, render_table()) == readme, "run: python tools/settings_table.py"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index(START) : readme.index(END)]
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs Field(description=...)"
        assert f"`IMAGEGEN_{name.upper()}`" in table, name


def test_render_refuses_a_setting_without_description(monkeypatch: pytest.MonkeyPatch) -> None:
    field = Settings.model_fields["log_level"]
    monkeypatch.setattr(field, "description", None)
    with pytest.raises(ValueError, match="log_level"):
        render_table()


def test_link_and_path_finders_see_what_they_should() -> None:
    text = "See [api](docs/api.md#errors), ![x](images/a.png), [web](https://x.org/docs/y.md), [top](#layout).\n"
    text += "`worker/pipeline/loras.py`, deploy/k8s/overlays/{gke,eks}/ and https://github.com/a/tests/b.py."
    assert _relative_links(text) == ["docs/api.md#errors", "images/a.png"]
    assert _named_paths(text) == [
        "docs/api.md",
        "worker/pipeline/loras.py",
        "deploy/k8s/overlays/gke/",
        "deploy/k8s/overlays/eks/",
    ]


def _example_prompts(markdown: str) -> list[str]:
    """The prompts of the code blocks in `markdown`."""
    blocks = "\n".join(re.findall(r"```(?:bash|python)\n(.*?)```", markdown, re.S))
    return [next(group for group in match.groups() if group is not None) for match in PROMPT.finditer(blocks)]


def test_readme_examples_use_prompts_the_demo_draws() -> None:
    prompts = _example_prompts((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(prompts) >= 8, prompts  # the finder still sees the examples
    unknown = {prompt: sorted(set(prompt.split()) - set(VOCABULARY)) for prompt in prompts}
    assert not {prompt: words for prompt, words in unknown.items() if words}, "the demo model knows none of these words"


def test_prompt_finder_sees_every_spelling() -> None:
    text = """```bash\ncurl -d '{"prompt": "a red circle"}' -F prompt='a blue square'\n"""
    text += """curl -d "{\\"prompt\\": \\"a green triangle\\"}"\nimagegen generate "a white shape" -o x.png\n```\n"""
    assert _example_prompts(text) == ["a red circle", "a blue square", "a green triangle", "a white shape"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    missing = [
        target
        for target in _relative_links(doc.read_text(encoding="utf-8"))
        if not (doc.parent / target.split("#", 1)[0]).exists()
    ]
    assert not missing, f"{doc.relative_to(ROOT)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_named_repository_paths_exist(doc: Path) -> None:
    missing = sorted({path for path in _named_paths(doc.read_text(encoding="utf-8")) if not (ROOT / path).exists()})
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"
