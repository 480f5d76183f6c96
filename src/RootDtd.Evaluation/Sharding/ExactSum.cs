using System.Globalization;
using System.Numerics;

namespace RootDtd.Evaluation.Sharding;

/// <summary>
/// An exact sum of doubles: every finite double is an integer multiple of 2^−1074, so the sum is kept as that integer.
/// Addition is therefore associative and commutative: the sum of a dataset's batch statistics is the same whichever
/// order and grouping (one run, shards merged, a resumed run) produced it, bit for bit. <see cref="ToDouble"/> maps the
/// exact value to a double deterministically (truncating to 62 significant bits first, then rounding once).
/// </summary>
public readonly struct ExactSum : IEquatable<ExactSum>
{
    private const int Scale = 1074;
    private readonly BigInteger _units;

    private ExactSum(BigInteger units) => _units = units;

    /// <summary>Zero.</summary>
    public static ExactSum Zero => default;

    /// <summary>The exact value of one double.</summary>
    /// <param name="value">A finite double.</param>
    /// <exception cref="ArgumentException">NaN or infinity.</exception>
    public static ExactSum Of(double value)
    {
        if (!double.IsFinite(value)) throw new ArgumentException($"Only finite values can be summed exactly; got {value}.", nameof(value));
        if (value == 0) return Zero;
        var bits = BitConverter.DoubleToInt64Bits(value);
        var exponent = (int)((bits >> 52) & 0x7FF);
        var mantissa = bits & 0xF_FFFF_FFFF_FFFFL;
        if (exponent == 0) exponent = 1; else mantissa |= 1L << 52;
        // value = mantissa · 2^(exponent − 1075) = mantissa · 2^(exponent − 1) · 2^−1074
        var units = new BigInteger(mantissa) << (exponent - 1);
        return new ExactSum(value < 0 ? -units : units);
    }

    /// <summary>Exact addition.</summary>
    public static ExactSum operator +(ExactSum a, ExactSum b) => new(a._units + b._units);

    /// <summary>Exact addition of a double.</summary>
    public static ExactSum operator +(ExactSum a, double b) => a + Of(b);

    /// <summary>The value as a double (deterministic; within 2^−61 relative of the exact value).</summary>
    public double ToDouble()
    {
        if (_units.IsZero) return 0;
        var magnitude = BigInteger.Abs(_units);
        var length = (int)magnitude.GetBitLength();
        var shift = Math.Max(0, length - 62);
        var top = (long)(magnitude >> shift);
        var value = Math.ScaleB(top, shift - Scale);
        return _units.Sign < 0 ? -value : value;
    }

    /// <summary>The exact value as an integer count of 2^−1074 (for JSON); see <see cref="Parse"/>.</summary>
    public override string ToString() => _units.ToString(CultureInfo.InvariantCulture);

    /// <summary>Reads <see cref="ToString"/>'s text.</summary>
    /// <param name="text">The integer text.</param>
    public static ExactSum Parse(string text) => new(BigInteger.Parse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture));

    /// <inheritdoc />
    public bool Equals(ExactSum other) => _units.Equals(other._units);

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is ExactSum other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => _units.GetHashCode();

    /// <summary>Equality.</summary>
    public static bool operator ==(ExactSum a, ExactSum b) => a.Equals(b);

    /// <summary>Inequality.</summary>
    public static bool operator !=(ExactSum a, ExactSum b) => !a.Equals(b);

    /// <summary>Elementwise exact sums of two vectors of the same length.</summary>
    internal static ExactSum[] Add(ExactSum[] a, ExactSum[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"Cannot add sums of {a.Length} and {b.Length} values.");
        var r = new ExactSum[a.Length];
        for (var i = 0; i < r.Length; i++) r[i] = a[i] + b[i];
        return r;
    }

    /// <summary>Elementwise exact sums of a vector and doubles.</summary>
    internal static ExactSum[] Add(ExactSum[] a, double[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"Cannot add {b.Length} values to {a.Length} sums.");
        var r = new ExactSum[a.Length];
        for (var i = 0; i < r.Length; i++) r[i] = a[i] + b[i];
        return r;
    }
}
