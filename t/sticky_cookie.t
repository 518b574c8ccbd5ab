#!/usr/bin/perl

# sticky cookie as NGINX Plus documents it: the cookie value is the hex MD5
# of the server's address and port, the attributes are written in Plus's
# order (expires, max-age, domain, httponly, secure, samesite, path); a
# request with the cookie goes to that server on top of round robin,
# least_conn, hash and ip_hash (and with a zone and keepalive), and to the balancer when that server is
# down or unknown. And the configurations "nginx -t" refuses, "sticky
# route" among them.

use strict;
use warnings;

use Test::More;
use Digest::MD5 qw(md5_hex);

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http proxy zone_sync/);

my $conf = <<'EOF';
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    upstream full {
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id expires=1h domain=.example.com path=/
               httponly secure samesite=lax;
    }

    upstream plain {
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sync_sticky cookie srv_id;
    }

    upstream max {
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id expires=max;
    }

    upstream vars {
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id domain=$arg_d samesite=$arg_ss;
    }

    upstream lc {
        least_conn;
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id;
    }

    upstream hash {
        hash $arg_k;
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id;
    }

    upstream iphash {
        ip_hash;
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id;
    }

    # shared peers (locks, reference counts), keepalive wrapping sticky
    upstream zoned {
        zone upz 64k;
        server 127.0.0.1:8091;
        server 127.0.0.1:8092;
        sticky cookie srv_id;
        keepalive 2;
    }

    upstream down {
        server 127.0.0.1:8091 down;
        server 127.0.0.1:8092;
        sticky cookie srv_id;
    }

    server {
        listen 127.0.0.1:8080;

        location / {
            proxy_pass http://$arg_u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

    server {
        listen 127.0.0.1:8091;
        listen 127.0.0.1:8092;
        location / { return 200 "server $server_port\n"; }
    }
}
EOF

$t->write_file_expand('nginx.conf', $conf);
$t->run()->plan(33);

###############################################################################

my ($p1, $p2) = (port(8091), port(8092));
my %hash = ($p1 => md5_hex("127.0.0.1:$p1"), $p2 => md5_hex("127.0.0.1:$p2"));

# (server port, Set-Cookie value)
sub get {
	my ($args, $cookie) = @_;
	my %h = defined $cookie ? (headers => { Cookie => "srv_id=$cookie" }) : ();
	my $r = http_get("/?$args", %h) // '';
	my ($port) = $r =~ /server (\d+)/;
	my ($set) = $r =~ /^Set-Cookie: (.*?)\r$/mi;
	return ($port // 0, $set // '');
}

# attributes

my ($port, $set) = get('u=full');
like($set, qr/^srv_id=$hash{$port}; expires=\w{3}, \d\d-\w{3}-\d\d \d\d:\d\d:\d\d GMT; max-age=3600; domain=\.example\.com; httponly; secure; samesite=lax; path=\/$/,
	'full: value and attributes in Plus order');
($port, $set) = get('u=plain');
is($set, "srv_id=$hash{$port}", 'no parameters: no attributes');
($port, $set) = get('u=max');
is($set, "srv_id=$hash{$port}; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000",
	'expires=max');
($port, $set) = get('u=vars&d=a.example&ss=None');
is($set, "srv_id=$hash{$port}; domain=a.example; samesite=None",
	'domain and samesite from variables');
($port, $set) = get('u=vars&ss=bogus');
is($set, "srv_id=$hash{$port}; samesite=strict",
	'samesite variable with another value: strict');
($port, $set) = get('u=vars');
is($set, "srv_id=$hash{$port}", 'empty variables: no domain, no samesite');

# the expiry date is an hour ahead
($port, $set) = get('u=full');
my ($exp) = $set =~ /expires=\w+, (\S+ \S+) GMT/;
my %mon = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5,
	Jul => 6, Aug => 7, Sep => 8, Oct => 9, Nov => 10, Dec => 11);
my ($d, $m, $y, $H, $M, $S) = $exp =~ /(\d+)-(\w+)-(\d+) (\d+):(\d+):(\d+)/;
require Time::Local;
my $when = Time::Local::timegm($S, $M, $H, $d, $mon{$m}, 2000 + $y);
ok(abs($when - time() - 3600) < 5, 'expires is an hour from now');

# routing: the cookie wins over every balancing method

for my $u (qw/plain lc hash iphash zoned/) {
	for my $target ($p1, $p2) {
		my @got = map { (get("u=$u&k=1", $hash{$target}))[0] } 1 .. 4;
		is("@got", "$target $target $target $target", "$u: cookie for $target");
	}
}

my @seen = map { (get('u=hash&k=1'))[0] } 1 .. 4;
is(scalar(keys %{{ map { $_ => 1 } @seen }}), 1, 'hash alone: one server for one key');
my $other = $seen[0] == $p1 ? $p2 : $p1;
is((get('u=hash&k=1', $hash{$other}))[0], $other, 'hash: cookie sends elsewhere');

# the cookie is set for the server that answered

($port, $set) = get('u=plain', $hash{$p2});
is($set, "srv_id=$hash{$p2}", 'cookie set again on a bound request');
($port, $set) = get('u=plain', 'f' x 32);
is($set, "srv_id=$hash{$port}", 'unknown cookie: balancer, and a new cookie');

# a server that is down: the balancer, and the cookie of the other server

($port, $set) = get('u=down', $hash{$p1});
is($port, $p2, 'down: another server');
is($set, "srv_id=$hash{$p2}", 'down: its cookie');

$t->stop();

###############################################################################

# nginx -t refusals

sub upstream {
	my ($body) = @_;
	return <<"EOF";
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%
    upstream u1 {
        server 127.0.0.1:8091;
        $body
    }
}
EOF
}

sub refused {
	my ($body, $re, $name) = @_;
	$t->write_file_expand('nginx.conf', upstream($body));
	my ($code, $out) = $t->test_config();
	my @emerg = $out =~ /^nginx: \[emerg\] (.*)$/mg;
	ok($code != 0 && @emerg == 1 && $emerg[0] =~ $re, $name)
		or diag($out);
}

refused('sticky route $cookie_route;',
	qr/^"sticky route" is not supported: it matches the "route=" parameter of "server", which this nginx's "server" directive does not have \(use "sticky learn" or "sticky cookie"\) in /,
	'sticky route refused, saying why');
refused('sync_sticky route $cookie_route;',
	qr/^"sync_sticky route" is not supported/, 'sync_sticky route refused');
refused("sticky cookie a;\n sticky cookie b;",
	qr/^"sticky" directive is duplicate in /, 'duplicate');
refused('sticky cookie a samesite=bogus;',
	qr/^"sticky" directive invalid "samesite" parameter value in /, 'bad samesite');
refused('sticky cookie a expires=1x;',
	qr/^"sticky" directive invalid "expires" parameter value in /, 'bad expires');
refused('sticky learn lookup=$cookie_a zone=z:1m;',
	qr/"create" parameter is not specified/, 'learn without create');
refused('sticky learn create=$upstream_cookie_a lookup=$cookie_a;',
	qr/"zone" parameter is not specified/, 'learn without zone');
refused('sticky learn create=$upstream_cookie_a lookup=$cookie_a zone=z:1m timeout=0;',
	qr/invalid timeout/, 'learn with a zero timeout');
refused('sticky bogus a;', qr/^unknown parameter "bogus" in /, 'unknown method');
refused("sticky learn create=\$upstream_cookie_a lookup=\$cookie_a zone=z:1m;\n"
	. "}\n upstream u2 { server 127.0.0.1:8092;\n"
	. 'sticky learn create=$upstream_cookie_a lookup=$cookie_a zone=z:1m;',
	qr/^sticky zone "z" is already used in upstream "u1" in /, 'zone in two upstreams');

###############################################################################
