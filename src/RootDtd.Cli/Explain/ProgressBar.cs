using System.Globalization;

namespace RootDtd.Cli.Explain;

/// <summary>
/// A plain-text progress bar, e.g. <c>[#####     ] 12.4/50 images, 3.1 s/img, ETA 1 min 57 s</c>. Progress may be
/// fractional: within a batch the explainer reports per graph unit, so the bar moves while a long root-inference
/// batch runs. On a terminal it redraws one line in place (at most every <see cref="RedrawInterval"/>); otherwise
/// (redirected output, logs, CI) it writes a line when an item completes (for more than 20 items: each tenth of
/// them) and in between at most every <see cref="LogInterval"/>.
/// </summary>
public sealed class ProgressBar
{
    private readonly TextWriter _writer;
    private readonly int _total;
    private readonly bool _interactive;
    private readonly int _width;
    private readonly string _unit;
    private int _lastLength;
    private int _lastWhole = -1;
    private TimeSpan _lastWrite = TimeSpan.MinValue;

    /// <summary>Shortest time between two redraws on a terminal.</summary>
    public static TimeSpan RedrawInterval { get; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Shortest time between two lines for a partly done image when the output is not a terminal.</summary>
    public static TimeSpan LogInterval { get; } = TimeSpan.FromSeconds(10);

    /// <summary>Creates a bar for <paramref name="total"/> items.</summary>
    /// <param name="writer">Where the bar goes (standard error).</param>
    /// <param name="total">Number of items.</param>
    /// <param name="interactive">True on a terminal (redraw in place).</param>
    /// <param name="width">Characters of the bar.</param>
    /// <param name="unit">Name of the items (plural), e.g. <c>images</c>.</param>
    public ProgressBar(TextWriter writer, int total, bool interactive, int width = 30, string unit = "images")
    {
        _writer = writer;
        _total = Math.Max(total, 1);
        _interactive = interactive;
        _width = width;
        _unit = unit;
    }

    /// <summary>The bar text for <paramref name="done"/> (possibly fractional) items after <paramref name="elapsed"/>.</summary>
    public string Format(double done, TimeSpan elapsed)
    {
        done = Math.Clamp(done, 0, _total);
        var filled = (int)Math.Round(done / _total * _width);
        var inv = CultureInfo.InvariantCulture;
        var count = done == Math.Floor(done) ? ((int)done).ToString(inv) : done.ToString("0.0", inv);
        var text = $"[{new string('#', filled)}{new string(' ', _width - filled)}] {count}/{_total} {_unit}";
        if (done <= 0) return text;
        var perItem = elapsed.TotalSeconds / done;
        text += ", " + perItem.ToString("0.0##", inv) + " s/" + (_unit == "images" ? "img" : _unit.TrimEnd('s'));
        if (done < _total) text += ", ETA " + Duration(perItem * (_total - done));
        return text;
    }

    /// <summary>"45 s", "3 min 05 s", "2 h 10 min".</summary>
    public static string Duration(double seconds)
    {
        var inv = CultureInfo.InvariantCulture;
        if (!(seconds >= 0) || double.IsInfinity(seconds)) return "?";
        var s = (long)Math.Round(seconds);
        if (s < 60) return string.Create(inv, $"{s} s");
        if (s < 3600) return string.Create(inv, $"{s / 60} min {s % 60:00} s");
        return string.Create(inv, $"{s / 3600} h {s % 3600 / 60:00} min");
    }

    /// <summary>Shows the state after <paramref name="done"/> (possibly fractional) items; throttled as described on the class.</summary>
    public void Report(double done, TimeSpan elapsed)
    {
        // a new step: a whole item on a terminal or for up to 20 items, else a tenth of the total
        var step = _interactive || _total <= 20 ? 1 : _total / 10.0;
        var whole = (int)Math.Floor(Math.Clamp(done, 0, _total) / step);
        if (done >= _total) whole = int.MaxValue;
        var newWhole = whole != _lastWhole;
        var interval = _interactive ? RedrawInterval : LogInterval;
        if (!newWhole && elapsed - _lastWrite < interval) return;
        _lastWhole = whole;
        _lastWrite = elapsed;
        var text = Format(done, elapsed);
        if (_interactive)
        {
            _writer.Write("\r" + text.PadRight(_lastLength));
            _lastLength = text.Length;
        }
        else
        {
            _writer.WriteLine(text);
        }
        _writer.Flush();
    }

    /// <summary>On a terminal, erases the bar so that other lines can be written; elsewhere does nothing.</summary>
    public void Clear()
    {
        if (!_interactive || _lastLength == 0) return;
        _writer.Write("\r" + new string(' ', _lastLength) + "\r");
        _writer.Flush();
        _lastLength = 0;
    }

    /// <summary>Ends the line on a terminal.</summary>
    public void Finish()
    {
        if (_interactive && _lastLength > 0) _writer.WriteLine();
        _lastLength = 0;
    }
}
