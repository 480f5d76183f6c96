using System.Globalization;

namespace RootDtd.Cli.Explain;

/// <summary>
/// A plain-text progress bar, e.g. <c>[#####     ] 12/50 images 3.1 s/img</c>. On a terminal it redraws one line
/// in place; otherwise (redirected output, logs, CI) it writes one line per update.
/// </summary>
public sealed class ProgressBar
{
    private readonly TextWriter _writer;
    private readonly int _total;
    private readonly bool _interactive;
    private readonly int _width;
    private int _lastLength;

    /// <summary>Creates a bar for <paramref name="total"/> items.</summary>
    public ProgressBar(TextWriter writer, int total, bool interactive, int width = 30)
    {
        _writer = writer;
        _total = Math.Max(total, 1);
        _interactive = interactive;
        _width = width;
    }

    /// <summary>The bar text for <paramref name="done"/> items after <paramref name="elapsed"/>.</summary>
    public string Format(int done, TimeSpan elapsed)
    {
        done = Math.Clamp(done, 0, _total);
        var filled = (int)Math.Round((double)done / _total * _width);
        var rate = done == 0 ? "-" : (elapsed.TotalSeconds / done).ToString("0.0##", CultureInfo.InvariantCulture);
        return $"[{new string('#', filled)}{new string(' ', _width - filled)}] {done}/{_total} images {rate} s/img";
    }

    /// <summary>Shows the state after <paramref name="done"/> items.</summary>
    public void Report(int done, TimeSpan elapsed)
    {
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
