// exprcheck evaluates Argo Rollouts metric conditions with expr-lang, as Argo Rollouts does
// (utils/evaluate.EvalCondition: env {result, asInt, asFloat}, compiled with expr.AsBool()).
//
// stdin: a JSON list of {"condition": "...", "result": <any JSON value>}
// stdout: a JSON list of {"value": true|false} or {"error": "..."}, one per input.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/expr-lang/expr"
)

type question struct {
	Condition string      `json:"condition"`
	Result    interface{} `json:"result"`
}

type answer struct {
	Value *bool  `json:"value,omitempty"`
	Error string `json:"error,omitempty"`
}

func asInt(in string) int64 {
	value, err := strconv.ParseInt(in, 10, 64)
	if err != nil {
		panic(err)
	}
	return value
}

func asFloat(in string) float64 {
	value, err := strconv.ParseFloat(in, 64)
	if err != nil {
		panic(err)
	}
	return value
}

func evaluate(q question) (result answer) {
	defer func() {
		if r := recover(); r != nil {
			result = answer{Error: fmt.Sprint(r)}
		}
	}()
	env := map[string]interface{}{"result": q.Result, "asInt": asInt, "asFloat": asFloat}
	program, err := expr.Compile(q.Condition, expr.Env(env), expr.AsBool())
	if err != nil {
		return answer{Error: err.Error()}
	}
	output, err := expr.Run(program, env)
	if err != nil {
		return answer{Error: err.Error()}
	}
	value := output.(bool)
	return answer{Value: &value}
}

func main() {
	var questions []question
	if err := json.NewDecoder(os.Stdin).Decode(&questions); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	answers := make([]answer, len(questions))
	for i, q := range questions {
		answers[i] = evaluate(q)
	}
	if err := json.NewEncoder(os.Stdout).Encode(answers); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
