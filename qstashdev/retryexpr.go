package qstashdev

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// retryExpr is a compiled Upstash-Retry-Delay expression
// (docs/qstash-protocol.md §6.3): arithmetic
// over the variable "retried" giving milliseconds. Grammar (whitespace free):
//
//	expr    = term { ("+" | "-") term }
//	term    = unary { ("*" | "/" | "%") unary }
//	unary   = [ "-" | "+" ] unary | primary
//	primary = number | "retried" | func "(" expr { "," expr } ")" | "(" expr ")"
//
// with func one of pow, exp, sqrt, abs, floor, ceil, round, min, max.
type retryExpr struct {
	src  string
	eval func(retried float64) float64
}

const maxExprLen = 512
const maxExprDepth = 64

func parseRetryExpr(src string) (*retryExpr, error) {
	if len(src) > maxExprLen {
		return nil, fmt.Errorf("retry delay expression longer than %d characters", maxExprLen)
	}
	p := &exprParser{s: src}
	f, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("unexpected %q at offset %d", p.s[p.i:], p.i)
	}
	return &retryExpr{src: src, eval: f}, nil
}

// delayMillis evaluates the expression; ok is false for results that are
// not a usable delay (NaN, infinite, negative), in which case the caller
// falls back to the default backoff.
func (e *retryExpr) delayMillis(retried int) (float64, bool) {
	v := e.eval(float64(retried))
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, false
	}
	return v, true
}

type exprParser struct {
	s string
	i int
}

type exprFn = func(float64) float64

func (p *exprParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *exprParser) peek() byte {
	p.skipSpace()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *exprParser) expr(depth int) (exprFn, error) {
	if depth > maxExprDepth {
		return nil, fmt.Errorf("expression nested too deeply")
	}
	left, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	for {
		switch op := p.peek(); op {
		case '+', '-':
			p.i++
			right, err := p.term(depth)
			if err != nil {
				return nil, err
			}
			l := left
			if op == '+' {
				left = func(x float64) float64 { return l(x) + right(x) }
			} else {
				left = func(x float64) float64 { return l(x) - right(x) }
			}
		default:
			return left, nil
		}
	}
}

func (p *exprParser) term(depth int) (exprFn, error) {
	left, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for {
		switch op := p.peek(); op {
		case '*', '/', '%':
			p.i++
			right, err := p.unary(depth)
			if err != nil {
				return nil, err
			}
			l := left
			switch op {
			case '*':
				left = func(x float64) float64 { return l(x) * right(x) }
			case '/':
				left = func(x float64) float64 { return l(x) / right(x) }
			default:
				left = func(x float64) float64 { return math.Mod(l(x), right(x)) }
			}
		default:
			return left, nil
		}
	}
}

func (p *exprParser) unary(depth int) (exprFn, error) {
	if depth > maxExprDepth {
		return nil, fmt.Errorf("expression nested too deeply")
	}
	switch p.peek() {
	case '-':
		p.i++
		f, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return func(x float64) float64 { return -f(x) }, nil
	case '+':
		p.i++
		return p.unary(depth + 1)
	}
	return p.primary(depth)
}

var exprFuncs = map[string]struct {
	arity int // -1: one or more
	fn    func(args []float64) float64
}{
	"pow":   {2, func(a []float64) float64 { return math.Pow(a[0], a[1]) }},
	"exp":   {1, func(a []float64) float64 { return math.Exp(a[0]) }},
	"sqrt":  {1, func(a []float64) float64 { return math.Sqrt(a[0]) }},
	"abs":   {1, func(a []float64) float64 { return math.Abs(a[0]) }},
	"floor": {1, func(a []float64) float64 { return math.Floor(a[0]) }},
	"ceil":  {1, func(a []float64) float64 { return math.Ceil(a[0]) }},
	"round": {1, func(a []float64) float64 { return math.Round(a[0]) }},
	"min": {-1, func(a []float64) float64 {
		m := a[0]
		for _, v := range a[1:] {
			m = math.Min(m, v)
		}
		return m
	}},
	"max": {-1, func(a []float64) float64 {
		m := a[0]
		for _, v := range a[1:] {
			m = math.Max(m, v)
		}
		return m
	}},
}

func (p *exprParser) primary(depth int) (exprFn, error) {
	c := p.peek()
	switch {
	case c == '(':
		p.i++
		f, err := p.expr(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.peek() != ')' {
			return nil, fmt.Errorf("missing ) at offset %d", p.i)
		}
		p.i++
		return f, nil
	case c >= '0' && c <= '9' || c == '.':
		start := p.i
		for p.i < len(p.s) && (p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] == '.') {
			p.i++
		}
		v, err := strconv.ParseFloat(p.s[start:p.i], 64)
		if err != nil {
			return nil, fmt.Errorf("bad number %q", p.s[start:p.i])
		}
		return func(float64) float64 { return v }, nil
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		start := p.i
		for p.i < len(p.s) && (p.s[p.i] >= 'a' && p.s[p.i] <= 'z' || p.s[p.i] >= 'A' && p.s[p.i] <= 'Z') {
			p.i++
		}
		name := strings.ToLower(p.s[start:p.i])
		if name == "retried" {
			return func(x float64) float64 { return x }, nil
		}
		def, ok := exprFuncs[name]
		if !ok {
			return nil, fmt.Errorf("unknown identifier %q", p.s[start:p.i])
		}
		if p.peek() != '(' {
			return nil, fmt.Errorf("%s must be called", name)
		}
		p.i++
		var args []exprFn
		for {
			a, err := p.expr(depth + 1)
			if err != nil {
				return nil, err
			}
			args = append(args, a)
			if p.peek() == ',' {
				p.i++
				continue
			}
			break
		}
		if p.peek() != ')' {
			return nil, fmt.Errorf("missing ) after arguments of %s", name)
		}
		p.i++
		if def.arity >= 0 && len(args) != def.arity {
			return nil, fmt.Errorf("%s takes %d argument(s), got %d", name, def.arity, len(args))
		}
		fn := def.fn
		return func(x float64) float64 {
			vals := make([]float64, len(args))
			for i, a := range args {
				vals[i] = a(x)
			}
			return fn(vals)
		}, nil
	case c == 0:
		return nil, fmt.Errorf("unexpected end of expression")
	default:
		return nil, fmt.Errorf("unexpected %q at offset %d", string(c), p.i)
	}
}
