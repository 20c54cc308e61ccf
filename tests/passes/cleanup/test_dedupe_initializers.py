from kiln.passes.cleanup.dedupe_initializers import DedupeInitializers


def test_merges_equal_initializers_only(golden):
    before = """
    graph @g(%x: f32[2], %w: f32[2]) {
      init %w = f32[2]{1, 2}
      init %a = f32[2]{1, 2}
      init %b = f32[2]{1, 2}
      init %c = f32[2]{2, 1}
      init %d = f64[2]{1, 2}
      init %e = f32[1,2]{1, 2}
      init %nz = f32[2]{-0.0, 0}
      init %z = f32[2]{0, 0}
      %p = Add(%x, %a)
      %q = Add(%p, %b)
      %r = Add(%q, %c)
      %s = Add(%r, %w)
      %t = Add(%s, %nz)
      %u = Add(%t, %z)
      %d32 = Cast(%d) {to: 1}
      %v = Add(%u, %d32)
      %y = Add(%v, %e)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2], %w: f32[2]) {
      init %w = f32[2]{1, 2}
      init %a = f32[2]{1, 2}
      init %c = f32[2]{2, 1}
      init %d = f64[2]{1, 2}
      init %e = f32[1,2]{1, 2}
      init %nz = f32[2]{-0.0, 0}
      init %z = f32[2]{0, 0}
      %p = Add(%x, %a)
      %q = Add(%p, %a)
      %r = Add(%q, %c)
      %s = Add(%r, %w)
      %t = Add(%s, %nz)
      %u = Add(%t, %z)
      %d32 = Cast(%d) {to: 1}
      %v = Add(%u, %d32)
      %y = Add(%v, %e)
      return %y
    }
    """
    result = golden(DedupeInitializers(), before, expected)
    assert result.stats == {"merged": 1}


def test_nothing_to_merge(golden):
    before = """
    graph @g(%x: f32[2]) {
      init %a = f32[2]{1, 2}
      init %b = f32[2]{1, 3}
      %p = Add(%x, %a)
      %y = Add(%p, %b)
      return %y
    }
    """
    assert not golden(DedupeInitializers(), before, before).changed
