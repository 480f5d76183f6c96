using static TorchSharp.torch;

namespace RootDtd.Models.WeightsFiles;

/// <summary>
/// One tensor of a weights file, described before any of its data is read: its key, dtype and shape as declared, and
/// how many bytes reading it costs. The declared sizes have been checked against the file (the storage exists and is
/// large enough); <see cref="Read"/> allocates and reads.
/// </summary>
internal sealed class TensorRecord
{
    public TensorRecord(string key, ScalarType dtype, long[] shape, long storageBytes, string storageName, Func<Tensor> read)
    {
        Key = key;
        DType = dtype;
        Shape = shape;
        StorageBytes = storageBytes;
        StorageName = storageName;
        Read = read;
    }

    public string Key { get; }
    public ScalarType DType { get; }
    public long[] Shape { get; }

    /// <summary>Bytes of the storage the tensor is read from (a view may use only part of it).</summary>
    public long StorageBytes { get; }

    /// <summary>The storage (zip entry or byte range) in messages; tensors sharing a storage share the name.</summary>
    public string StorageName { get; }

    /// <summary>Reads the tensor (CPU, contiguous); the caller disposes it.</summary>
    public Func<Tensor> Read { get; }

    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));

    public static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 or ScalarType.ComplexFloat32 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => 1,
        ScalarType.ComplexFloat64 => 16,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unsupported dtype"),
    };

    /// <summary>A 1-D tensor of <paramref name="bytes"/> interpreted as <paramref name="dtype"/> (little-endian).</summary>
    public static Tensor FromBytes(byte[] bytes, ScalarType dtype)
    {
        var t = empty(new long[] { bytes.Length / ElementSize(dtype) }, dtype);
        if (bytes.Length > 0) t.bytes = bytes;
        return t;
    }
}
