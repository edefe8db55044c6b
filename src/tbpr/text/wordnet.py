"""WordNet 3.0 for nltk, from Debian's ``wordnet-base`` + ``wordnet-sense-index`` packages.

Debian installs the database in ``/usr/share/wordnet`` but not the ``lexnames`` file nltk's reader
needs, and nltk refuses to read outside ``nltk.data.path`` (symlinks are resolved before the check).
``prepare`` therefore builds an nltk data folder, ``<root>/corpora/wordnet``, holding copies of the
Debian files (36 MB; nltk also refuses hard links and files other accounts can write) plus a written
``lexnames``; ``root`` is ``$TBPR_NLTK_DATA`` or ``~/.cache/tbpr/nltk_data``. The folder is assembled
in a temporary directory and renamed into place, so concurrent first uses never see half of it.
Without the Debian files, an nltk install (``python -m nltk.downloader wordnet``) is used instead.
Loading the reader takes a few seconds; ``reader()`` does it once per process.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from tbpr.errors import ConfigError

log = logging.getLogger(__name__)

DEBIAN_WORDNET = Path("/usr/share/wordnet")
ROOT_ENV = "TBPR_NLTK_DATA"
INSTALL_HINT = (
    "install WordNet 3.0: `apt-get install wordnet-base wordnet-sense-index` (Debian/Ubuntu, "
    "or `make wordnet` as root) or `python -m nltk.downloader wordnet`"
)

# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)), numbered from 0.
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
# syntactic category of each file, by its prefix
CATEGORIES = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    """The ``lexnames`` file: one ``NN<TAB>name<TAB>category`` line per lexicographer file."""
    return "".join(f"{i:02d}\t{name}\t{CATEGORIES[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def data_root() -> Path:
    """The nltk data folder tbpr prepares: ``$TBPR_NLTK_DATA`` or ``~/.cache/tbpr/nltk_data``."""
    return Path(os.environ.get(ROOT_ENV) or Path.home() / ".cache" / "tbpr" / "nltk_data").expanduser()


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in WordNetCorpusReader._FILES)


def prepare(root: Path | None = None, source: Path = DEBIAN_WORDNET) -> Path:
    """Build (once) and return ``root/corpora/wordnet`` from the Debian files in ``source``."""
    target = (root or data_root()) / "corpora" / "wordnet"
    if _complete(target):
        return target
    missing = [n for n in WordNetCorpusReader._FILES if n != "lexnames" and not (source / n).is_file()]
    if missing:
        raise ConfigError(f"WordNet files {missing} are missing from {source}: {INSTALL_HINT}")
    if target.exists():
        raise ConfigError(
            f"{target} exists but lacks WordNet files; remove it (tbpr rebuilds it from {source})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".wordnet-"))
    try:
        for name in WordNetCorpusReader._FILES:
            if name != "lexnames":
                shutil.copyfile(source / name, tmp / name)
        (tmp / "lexnames").write_text(lexnames_text())
        for path in tmp.iterdir():
            path.chmod(0o644)  # nltk reads only files no other account can write
        tmp.chmod(0o755)
        os.rename(tmp, target)
        log.info("prepared nltk WordNet data in %s (from %s)", target, source)
    except OSError:
        if not _complete(target):  # not a concurrent first use that finished before us
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load(root: Path | None = None, source: Path = DEBIAN_WORDNET) -> WordNetCorpusReader:
    """A WordNet reader: tbpr's prepared folder (built from ``source`` if needed), else nltk's install."""
    root = root or data_root()
    if _complete(root / "corpora" / "wordnet") or source.is_dir():
        corpus = str(prepare(root, source))
        if str(root) not in nltk.data.path:
            nltk.data.path.append(str(root))
    else:
        try:
            corpus = nltk.data.find("corpora/wordnet")
        except LookupError:
            raise ConfigError(
                f"WordNet is not installed (needed for synonym-based text augmentation): {INSTALL_HINT}"
            ) from None
    with warnings.catch_warnings():  # "multilingual functions are not available": only English is used
        warnings.simplefilter("ignore")
        return WordNetCorpusReader(corpus, None)


@functools.cache
def reader() -> WordNetCorpusReader:
    """The process-wide WordNet reader (loaded on first use; forked processes inherit it)."""
    return load()


def _reopen_files_after_fork() -> None:
    """Give a forked process (a DataLoader worker) its own WordNet file handles.

    nltk reads synsets by seek + read on files it keeps open; after a fork those share one offset with
    the parent's and the other workers' handles, so concurrent reads would interleave. Dropping them
    (nltk's private fields) makes nltk reopen each file on first use in the child.
    """
    if not reader.cache_info().currsize:
        return
    wn = reader()
    for fh in [*wn._data_file_map.values(), wn._key_count_file, wn._key_synset_file]:
        if fh is not None:
            fh.close()  # closes the child's copy of the descriptor only
    wn._data_file_map = {}
    wn._key_count_file = wn._key_synset_file = None


os.register_at_fork(after_in_child=_reopen_files_after_fork)
