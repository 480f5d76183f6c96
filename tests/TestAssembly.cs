using Xunit;

// Tests seed libtorch's one global generator (torch.manual_seed) and then draw weights and inputs from it. xunit runs
// test classes in parallel by default, so a class on another thread could draw from the generator between a test's
// seed and its draws and silently change that test's model — a flaky test that depends on thread timing. The tests
// of every test assembly therefore run one at a time (tests/Directory.Build.props compiles this one file into each);
// libtorch still uses every core inside each test.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
