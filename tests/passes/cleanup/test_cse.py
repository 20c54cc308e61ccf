from kiln.passes.cleanup.cse import CommonSubexpressionElimination


def test_merges_equal_nodes_and_then_their_consumers(golden):
    before = """
    graph @g(%x: f32[2,3]) {
      %c1 = Constant() {value: f32[3]{1, 2, 3}}
      %c2 = Constant() {value: f32[3]{1, 2, 3}}
      %a = Add(%x, %c1)
      %b = Add(%x, %c2)
      %ea = Exp(%a)
      %eb = Exp(%b)
      %s = Softmax(%a) {axis: 1}
      %t = Softmax(%a) {axis: 0}
      %y = Sum(%ea, %eb, %s, %t)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2,3]) {
      %c1 = Constant() {value: f32[3]{1, 2, 3}}
      %a = Add(%x, %c1)
      %ea = Exp(%a)
      %s = Softmax(%a) {axis: 1}
      %t = Softmax(%a) {axis: 0}
      %y = Sum(%ea, %ea, %s, %t)
      return %y
    }
    """
    result = golden(CommonSubexpressionElimination(), before, expected)
    assert result.stats == {"merged": 3}


def test_graph_outputs_keep_their_names(golden):
    before = """
    graph @g(%x: f32[3]) {
      %a = Relu(%x)
      %b = Relu(%x)
      return %a, %b
    }
    """
    expected = """
    graph @g(%x: f32[3]) {
      %a = Relu(%x)
      %b = Identity(%a)
      return %a, %b
    }
    """
    golden(CommonSubexpressionElimination(), before, expected)


def test_leaves_random_custom_and_subgraph_nodes_alone(golden):
    before = """
    graph @g(%x: f32[3], %cond: bool[]) {
      %r1 = RandomUniformLike(%x)
      %r2 = RandomUniformLike(%x)
      %i1 = If(%cond) {
        then_branch: graph @t1() { %n1 = Neg(%x) return %n1 },
        else_branch: graph @e1() { %m1 = Abs(%x) return %m1 }
      }
      %i2 = If(%cond) {
        then_branch: graph @t2() { %n2 = Neg(%x) return %n2 },
        else_branch: graph @e2() { %m2 = Abs(%x) return %m2 }
      }
      %c1 = my.ops::Tick(%x)
      %c2 = my.ops::Tick(%x)
      return %r1, %r2, %i1, %i2, %c1, %c2
    }
    """
    assert not golden(CommonSubexpressionElimination(), before, before, numeric=False).changed
