"""The title page's details, from ``report.toml`` in the project folder.

Who you are and where you study change rarely, so they can live in a small
settings file instead of on every command line; an option given to
make_report overrides the file's value. Every key is optional:

    # report.toml
    student = "Ім'я Прізвище"
    group = "КН-24"
    teacher = "доц. Ім'я Прізвище"
    university = "Назва університету"
    department = "Кафедра ..."
    city = "Київ"
    # topic = "..."   aim = "..."   (default: the manual's)

The file is read with ``tomllib`` (Python 3.11 and later) or, on Python 3.10,
``tomli`` when it is installed. A file that cannot be read is a one-line
``LabError``; without the file nothing is needed.

Usage:

    from network.report.settings import read_settings
    values = read_settings(Path("report.toml"))     # {"student": "...", ...}
"""

from network.core.errors import LabError

FIELDS = ("student", "group", "teacher", "topic", "aim", "university", "department", "city")
SETTINGS_FILE = "report.toml"


def toml_reader():
    """The TOML module of this Python, or None on 3.10 without tomli."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            return None
    return tomllib


def read_settings(path):
    """The title page's details in ``path`` ({} when there is no such file)."""
    if not path.is_file():
        return {}
    toml = toml_reader()
    if toml is None:
        raise LabError(f"{path} needs Python 3.11 or later, or the tomli package "
                       "(pip install tomli), to be read")
    try:
        values = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError) as err:
        raise LabError(f"{path} cannot be read ({err}): fix it or remove it") from None
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise LabError(f"{path}: unknown setting {', '.join(unknown)} (known: "
                       f"{', '.join(FIELDS)})")
    wrong = sorted(key for key, value in values.items() if not isinstance(value, str))
    if wrong:
        raise LabError(f"{path}: {', '.join(wrong)} must be text in quotes")
    return values
