"""Colours and looks: light, dark or the system's palette, every text readable, plots that follow.

A person picks the theme from View ▸ Theme, with `python main.py --theme light|dark|system`, or with
LLM_PLAYGROUND_THEME. Light and dark are our own palettes (on Fusion, a style that follows palettes
on every platform), so switching in either direction repaints the whole window the same way. "system"
takes the platform's palette and only lifts the colours whose contrast is too low.

Every text colour the app uses meets WCAG AA (4.5:1 against its background): the palettes are built
so, `readable()` fixes a system palette, and coloured text (warnings, errors, notes) comes from
`text_color()` / `colored()`, which darken or lighten the hue until it passes on the current theme.
Widgets that paint with these colours refresh on QEvent.PaletteChange; `theme_changed` fires after
each switch for the rest.
"""
from __future__ import annotations

import html
import os

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QWidget

from app.resources import RESOURCES

THEMES = ("system", "light", "dark")
THEME_ENV = "LLM_PLAYGROUND_THEME"
MIN_CONTRAST = 4.5  # WCAG AA for body text
# Colours the app makes readable aim higher: anti-aliased thin strokes of small text render paler than
# their colour, and the text as painted must still reach MIN_CONTRAST (app/tools/ui_audit.py measures it).
READABLE_TARGET = 6.0

# Okabe-Ito colours (readable by colour-blind people), then a few more for many runs.
RUN_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
              "#8C564B", "#17BECF"]
# Fixed roles inside one run's plot.
SERIES_COLORS = {"train": "#0072B2", "val": "#D55E00", "lr": "#009E73", "tokens": "#CC79A7"}
DARK_SERIES_COLORS = {"train": "#56B4E9", "val": "#FF8C42", "lr": "#3DD9A4", "tokens": "#E59AD0"}
# Hues of coloured text; text_color() adjusts their lightness to the theme.
TEXT_HUES = {"warning": "#D55E00", "error": "#D1242F", "ok": "#007A5A", "accent": "#0072B2"}

_current = "system"
_forced: str | None = None  # a theme given on the command line or in the environment: wins over settings
_system_palette: QPalette | None = None
_system_style: str | None = None


class _Notifier(QObject):
    changed = Signal(str)


_notifier: _Notifier | None = None


def theme_changed() -> Signal:
    """A signal (the theme's name) emitted after every switch: connect views that keep colours of their own."""
    global _notifier
    if _notifier is None:
        _notifier = _Notifier()
    return _notifier.changed


def current_theme() -> str:
    return _current


def forced_theme() -> str | None:
    """The theme from --theme or LLM_PLAYGROUND_THEME, if one was given (it wins over the saved choice)."""
    return _forced


# ---------------------------------------------------------------- contrast

def luminance(color: QColor) -> float:
    """WCAG relative luminance of an opaque colour (0 black … 1 white)."""
    def channel(value: int) -> float:
        c = value / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.red()) + 0.7152 * channel(color.green()) + 0.0722 * channel(color.blue())


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio, 1 (same) … 21 (black on white)."""
    la, lb = sorted((luminance(a), luminance(b)))
    return (lb + 0.05) / (la + 0.05)


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """t of colour a over (1 - t) of b, opaque."""
    return QColor(*(round(t * x + (1 - t) * y) for x, y in zip(a.getRgb()[:3], b.getRgb()[:3])))


def readable(fg: QColor | str, *backgrounds: QColor, minimum: float = READABLE_TARGET) -> QColor:
    """`fg`, darkened (on light backgrounds) or lightened (on dark ones) just enough to reach `minimum`
    contrast against every background; the hue is kept as far as it can be."""
    fg = QColor(fg)
    if fg.alpha() < 255 and backgrounds:  # a see-through colour (platform placeholders) paints as a mix
        fg = mix(QColor(fg.red(), fg.green(), fg.blue()), backgrounds[0], fg.alphaF())
    if all(contrast_ratio(fg, bg) >= minimum for bg in backgrounds):
        return fg
    dark_backgrounds = max(luminance(bg) for bg in backgrounds) < 0.18
    target = QColor("white") if dark_backgrounds else QColor("black")
    for i in range(1, 21):
        candidate = mix(target, fg, i / 20)
        if all(contrast_ratio(candidate, bg) >= minimum for bg in backgrounds):
            return candidate
    return target


def ink_for(background: QColor) -> QColor:
    """Black or white, whichever reads better on `background` (text on coloured token spans)."""
    black, white = QColor("#1b1b1b"), QColor("white")
    return black if contrast_ratio(black, background) >= contrast_ratio(white, background) else white


# ---------------------------------------------------------------- palettes

_ROLE_PAIRS = (  # (text role, background roles it is drawn on)
    (QPalette.ColorRole.WindowText, (QPalette.ColorRole.Window,)),
    (QPalette.ColorRole.Text, (QPalette.ColorRole.Base, QPalette.ColorRole.AlternateBase)),
    (QPalette.ColorRole.ButtonText, (QPalette.ColorRole.Button,)),
    (QPalette.ColorRole.PlaceholderText, (QPalette.ColorRole.Base, QPalette.ColorRole.Window,
                                          QPalette.ColorRole.Button)),
    (QPalette.ColorRole.ToolTipText, (QPalette.ColorRole.ToolTipBase,)),
    (QPalette.ColorRole.HighlightedText, (QPalette.ColorRole.Highlight,)),
    (QPalette.ColorRole.Link, (QPalette.ColorRole.Base, QPalette.ColorRole.Window)),
)


def readable_palette(palette: QPalette) -> QPalette:
    """A copy of `palette` whose text roles all reach READABLE_TARGET on their backgrounds (active and
    inactive groups; disabled text is exempt in WCAG and left as the platform made it)."""
    out = QPalette(palette)
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        for role, backgrounds in _ROLE_PAIRS:
            bgs = [out.color(group, b) for b in backgrounds]
            out.setColor(group, role, readable(out.color(group, role), *bgs))
    return out


def _palette(colors: dict[QPalette.ColorRole, str], disabled: str) -> QPalette:
    p = QPalette()
    for role, value in colors.items():
        p.setColor(role, QColor(value))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled))
    return p


R = QPalette.ColorRole


def light_palette() -> QPalette:
    """Light grey window, white fields, near-black text; muted text #505050 (7.1:1 on the window)."""
    return _palette({
        R.Window: "#f0f0f0", R.WindowText: "#1b1b1b", R.Base: "#ffffff", R.AlternateBase: "#f5f5f5",
        R.ToolTipBase: "#ffffdc", R.ToolTipText: "#1b1b1b", R.PlaceholderText: "#505050", R.Text: "#1b1b1b",
        R.Button: "#e8e8e8", R.ButtonText: "#1b1b1b", R.BrightText: "#b00020", R.Light: "#ffffff",
        R.Midlight: "#e3e3e3", R.Mid: "#b8b8b8", R.Dark: "#9f9f9f", R.Shadow: "#767676",
        R.Highlight: "#1d63b7", R.HighlightedText: "#ffffff", R.Link: "#0b57d0", R.LinkVisited: "#6a3cb5",
    }, disabled="#8c8c8c")


def dark_palette() -> QPalette:
    """Dark grey window, darker fields, light text; muted text #b4b4b4 (7.4:1 on the window, 6:1 on buttons)."""
    return _palette({
        R.Window: "#252528", R.WindowText: "#e6e6e6", R.Base: "#1c1c1e", R.AlternateBase: "#2a2a2d",
        R.ToolTipBase: "#3a3a3e", R.ToolTipText: "#e6e6e6", R.PlaceholderText: "#b4b4b4", R.Text: "#e6e6e6",
        R.Button: "#333337", R.ButtonText: "#e6e6e6", R.BrightText: "#ff6b6b", R.Light: "#4a4a4e",
        R.Midlight: "#3c3c40", R.Mid: "#2e2e32", R.Dark: "#18181a", R.Shadow: "#000000",
        R.Highlight: "#2f6fc0", R.HighlightedText: "#ffffff", R.Link: "#6cb4ff", R.LinkVisited: "#c19cf0",
    }, disabled="#7a7a7a")


# ---------------------------------------------------------------- colours for the current theme

def is_dark(palette: QPalette | None = None) -> bool:
    palette = palette or QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def _backgrounds() -> tuple[QColor, QColor]:
    palette = QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window), palette.color(QPalette.ColorRole.Base)


def text_color(kind: str) -> QColor:
    """A readable colour for coloured text on the current theme: "warning", "error", "ok", "accent",
    or "muted" (the palette's placeholder text)."""
    if kind == "muted":
        return muted_color()
    return readable(TEXT_HUES[kind], *_backgrounds())


def muted_color() -> QColor:
    return readable(QGuiApplication.palette().color(QPalette.ColorRole.PlaceholderText), *_backgrounds())


def colored(text: str, kind: str, *, escape: bool = True) -> str:
    """Rich text of `text` in text_color(kind) (rebuild it on PaletteChange: the colour is baked in)."""
    body = html.escape(text) if escape else text
    return f"<span style='color:{text_color(kind).name()}'>{body}</span>"


def series_color(role: str) -> str:
    return (DARK_SERIES_COLORS if is_dark() else SERIES_COLORS)[role]


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]


def plot_background() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.Base)


def plot_foreground() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.Text)


def muted_text_color() -> QColor:
    """Muted text for plots (an opaque colour: text over a plot must stay readable)."""
    return muted_color()


def palette_colours(widget: QWidget) -> tuple[QColor, QColor]:
    """(background, text) of the widget's palette: plots follow the light or dark theme."""
    palette = widget.palette()
    return palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)


def style_plot_widget(widget: pg.PlotWidget | pg.GraphicsLayoutWidget) -> None:
    """Background, axis and title colours from the current palette."""
    widget.setBackground(plot_background())
    fg = plot_foreground()
    items = widget.ci.items if isinstance(widget, pg.GraphicsLayoutWidget) else {widget.getPlotItem(): None}
    for item in list(items):
        if isinstance(item, pg.PlotItem):
            style_plot_item(item, fg)


def style_plot_item(item: pg.PlotItem, fg: QColor | None = None) -> None:
    fg = fg or plot_foreground()
    for name in ("left", "bottom", "right", "top"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(fg))
        axis.setTextPen(pg.mkPen(fg))
        if axis.label is not None and axis.labelText:  # the axis title keeps its text, takes the colour
            axis.labelStyle = dict(axis.labelStyle, color=fg.name())
            axis._updateLabel()
    if item.titleLabel is not None and item.titleLabel.text:
        item.setTitle(item.titleLabel.text, color=fg.name())
    if item.legend is not None:
        item.legend.setLabelTextColor(fg)


# ---------------------------------------------------------------- switching

def style_sheet() -> str:
    """resources/styles/app.qss with the theme's colours filled in (@muted@, @warning@, @error@, @ok@)."""
    qss = RESOURCES / "styles" / "app.qss"
    text = qss.read_text(encoding="utf-8") if qss.exists() else ""
    for kind in ("muted", "warning", "error", "ok", "accent"):
        text = text.replace(f"@{kind}@", text_color(kind).name())
    return text


class _OutlinedChecks(QProxyStyle):
    """Fusion, with check boxes and radio buttons outlined in a colour that stands out in the dark theme.
    Fusion draws their outline as the window colour darkened, which vanishes on a dark Base: an unchecked box
    in a dark table was invisible."""

    _CHECKS = (QStyle.PrimitiveElement.PE_IndicatorCheckBox, QStyle.PrimitiveElement.PE_IndicatorItemViewItemCheck)
    _RADIO = QStyle.PrimitiveElement.PE_IndicatorRadioButton

    def drawPrimitive(self, element, option, painter, widget=None) -> None:  # noqa: N802 (Qt's name)
        super().drawPrimitive(element, option, painter, widget)
        if (element in self._CHECKS or element == self._RADIO) and is_dark(option.palette):
            colour = QColor(option.palette.color(QPalette.ColorRole.Text))
            colour.setAlpha(140)
            painter.save()
            painter.setRenderHint(painter.RenderHint.Antialiasing, element == self._RADIO)
            painter.setPen(colour)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            rect = option.rect.adjusted(0, 0, -1, -1)
            if element == self._RADIO:
                painter.drawEllipse(rect)
            else:
                painter.drawRect(rect)
            painter.restore()


def apply_theme(app: QApplication, theme: str) -> str:
    """Switch to "system", "light" or "dark" (anything else reads as "system"); returns the name used.

    The palette, Fusion or the platform style, pyqtgraph's defaults and the style sheet change together,
    so nothing keeps the previous theme's colours; widgets restyle on the palette change.
    """
    global _current, _system_palette, _system_style
    if _system_palette is None:
        _system_palette = QPalette(app.palette())
        _system_style = app.style().name() if app.style() is not None else "Fusion"
    theme = theme if theme in THEMES else "system"
    hints = app.styleHints()
    if theme == "system":
        if hasattr(hints, "unsetColorScheme"):
            hints.unsetColorScheme()
        app.setStyle(_system_style or "Fusion")
        palette = readable_palette(_system_palette)
    else:
        if hasattr(hints, "setColorScheme"):  # native dialogs and title bars follow, where the platform can
            hints.setColorScheme(Qt.ColorScheme.Dark if theme == "dark" else Qt.ColorScheme.Light)
        app.setStyle(_OutlinedChecks("Fusion"))  # our palettes need a style that paints with palettes everywhere
        palette = dark_palette() if theme == "dark" else light_palette()
    app.setPalette(palette)
    _current = theme
    pg.setConfigOptions(foreground=plot_foreground(), background=plot_background())
    app.setStyleSheet(style_sheet())  # also re-polishes, so palette() colours in it are fresh
    theme_changed().emit(theme)
    return theme


def setup_application(app: QApplication, theme: str | None = None) -> None:
    """Once per process, before any window: crisp plots, the theme and style sheet, the icon.

    `theme` (the --theme flag) wins over LLM_PLAYGROUND_THEME; without either, "system".
    """
    global _forced
    pg.setConfigOptions(antialias=True)
    wanted = theme or os.environ.get(THEME_ENV) or None
    _forced = wanted if wanted in THEMES else None
    icon = RESOURCES / "icons" / "app.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    apply_theme(app, _forced or "system")


def mono_font() -> QFont:
    """The system's fixed-width font (commands, ids, sample text)."""
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
