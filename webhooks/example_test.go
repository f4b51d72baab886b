package webhooks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

func ExampleQStashVerifier_Verify() {
	now := time.Unix(1700000000, 0)
	v, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: webhookstest.QStashDevCurrentKey,
		NextSigningKey:    webhookstest.QStashDevNextKey,
		Now:               func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	url := "https://worker.example.com/jobs/tips.settle"
	body := []byte(`{"tipId":"t_1"}`)
	// After a key roll QStash signs with what used to be the next key.
	sig, _ := webhookstest.QStashSignature(webhookstest.QStashDevNextKey, url, body, now)

	claims, err := v.Verify(context.Background(), sig, url, body)
	fmt.Println(claims.Key, err)

	_, err = v.Verify(context.Background(), sig, url, []byte(`{"tipId":"t_2"}`))
	fmt.Println(errors.Is(err, webhooks.ErrInvalidSignature), webhooks.CheckOf(err))
	// Output:
	// next <nil>
	// true body_hash
}

func ExampleVerifyQStash() {
	v, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: webhookstest.QStashDevCurrentKey,
		NextSigningKey:    webhookstest.QStashDevNextKey,
	})
	if err != nil {
		panic(err)
	}
	// The URL QStash was given, not what the worker sees behind its proxy.
	mw, err := webhooks.VerifyQStash(v, "https://worker.example.com")
	if err != nil {
		panic(err)
	}
	e := echo.New()
	e.POST("/jobs/:name", func(c echo.Context) error {
		claims, _ := webhooks.QStashClaimsFrom(c)
		return c.String(http.StatusOK, "verified with the "+claims.Key+" key")
	}, mw)

	body := `{"tipId":"t_1"}`
	for _, key := range []string{webhookstest.QStashDevCurrentKey, "sig_someoneElse0000000000000000"} {
		sig, _ := webhookstest.QStashSignature(key, "https://worker.example.com/jobs/tips.settle", []byte(body), time.Now())
		req := httptest.NewRequest(http.MethodPost, "http://10.0.0.7:8080/jobs/tips.settle", strings.NewReader(body))
		req.Header.Set(webhooks.HeaderUpstashSignature, sig)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String())
	}
	// Output:
	// 200 verified with the current key
	// 401 {"type":"about:blank","title":"Unauthorized","status":401}
}

func ExampleStripeVerifier_Verify() {
	now := time.Unix(1700000000, 0)
	v, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{
		// During a roll: the new secret first, the old one until Stripe stops using it.
		Secrets: []string{"whsec_new", "whsec_old"},
		Now:     func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	payload := webhookstest.StripeEvent("evt_1", "payment_intent.succeeded", now)

	ev, err := v.Verify(context.Background(), payload, webhookstest.StripeSignature("whsec_old", payload, now))
	fmt.Println(ev.ID, ev.Type, ev.APIVersion, err)

	// stripe-go accepts a timestamp from the future; this verifier does not.
	_, err = v.Verify(context.Background(), payload, webhookstest.StripeSignature("whsec_new", payload, now.Add(time.Hour)))
	fmt.Println(webhooks.CheckOf(err))
	// Output:
	// evt_1 payment_intent.succeeded 2023-10-16 <nil>
	// issued_in_future
}
